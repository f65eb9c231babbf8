// Cases of the differential suite (differential.js): seeded random datasets, operations and
// queries, and the known faults of the oracle (the official Firebase client on firebase-server)
// that the generator avoids, input by input, each counted. Pure functions of the seed.
'use strict';

// ---------------------------------------------------------------- known faults of the oracle
// Listed, and excluded narrowly: the generator avoids exactly these inputs and counts each
// avoidance; nothing else is filtered or tolerated.
const ORACLE_FAULTS = {
  // firebase 7.24 nameCompare: keys matching ^-?(0*)\d{1,10}$ compare as integers, a tie going to
  // the shorter key; "-0" and "00" (also "-00" / "000", ...) are equal integers of equal length,
  // so its sorted maps take them for ONE key (children vanish, getPredecessorKey can throw).
  // tetherd breaks that tie by text. Two such keys are never generated as siblings.
  collidingKeys: 0,
  // firebase-server's REST API ignores query parameters: the suite never uses REST, only the
  // client's own queries over its WebSocket protocol (the server answers the whole location and
  // the client's query engine selects and orders). Not an exclusion; recorded for the reader.
  //
  // firebase 7.24's write tree (WriteTree.layerTree_) finds an update's children by their first
  // segment only, so what an update wrote through a multi-segment child path ("a/z") is missed
  // when the value below that update's path is computed for an increment: the increment counts
  // from 0. firebase-server keeps its data in such a write tree (an offline client), so it stores
  // the wrong sum; the real server does not. An increment at a path such an earlier update wrote
  // through is never generated.
  incrementBelowDeepUpdate: 0,
  // firebase-server checks every write against its security rules with targaryen 3, which
  // predates ServerValue.increment and throws "invalid server value type" on one, so the server
  // never answers a write holding an increment. Rules are not under test: the oracle's server gets
  // an allow-all rules stub (Oracle.start), and the write goes to the client engine inside
  // firebase-server, which resolves the increment. Not an exclusion either.
};
// Deliberate differences (docs/device-protocol.md, "Queries"): never generated, listed so that a
// difference is either a bug or written down — $priority, the key argument of startAt/endAt/
// equalTo, limits without orderBy, limits above 2^31-1, integers beyond 2^53 (JavaScript has
// none; 64-bit integer arithmetic is covered by tests/gateway/data_semantics_test.cc), and
// increments whose result is not finite (refused with 4.00 by tetherd, unit-tested there).

// ---------------------------------------------------------------- seeded randomness
function rng(seed) {  // mulberry32
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: (arr) => arr[Math.floor(next() * arr.length)],
    chance: (p) => next() < p,
  };
}

// ---------------------------------------------------------------- the client's key order
// nameCompare of firebase 7.24 (used only to avoid its colliding keys, see ORACLE_FAULTS).
const INTEGER_KEY = /^-?(0*)\d{1,10}$/;
function tryParseInt(k) {
  if (!INTEGER_KEY.test(k)) return null;
  const n = Number(k);
  return n >= -2147483648 && n <= 2147483647 ? n : null;
}
function keysCollide(a, b) {
  if (a === b) return false;
  const x = tryParseInt(a), y = tryParseInt(b);
  return x !== null && y !== null && x === y && a.length === b.length;
}

// ---------------------------------------------------------------- generators
const KEYS = ['a', 'b', 'c', 'x', 'y', 'z', 'A', 'Z', '_', '~', 'aa', 'ab', 'h', 'v', '0', '1', '2', '9', '10',
  '11', '12', '007', '00', '01', '-0', '-1', '-01', '-10', '2147483647', '2147483648', '-2147483648',
  '-2147483649', '0000000000012', '\u00e9', '\u{1F600}', '\uE000', 'k l'];
const STRINGS = ['', 'a', 'b', 'ab', 'B', '10', '9', '-1', '\u00e9', '\u{1F600}', '\uE000', 'x y', 'true', 'null'];
const NUMBERS = [0, 1, 2, 3, -1, -7, 2.5, -0.5, 0.1, 10, 1e300, -1e300, 2147483647, 2147483648, -2147483649,
  9007199254740991, -9007199254740991, 1.5e-300];
function scalar(r) {
  const t = r.int(0, 9);
  if (t <= 3) return r.pick(NUMBERS);
  if (t <= 5) return r.pick(STRINGS);
  if (t === 6) return r.chance(0.5);
  return r.int(-3, 12);
}

// Keys for one object: distinct, never two that the oracle collides.
function siblingKeys(r, n, existing = []) {
  const keys = [];
  for (let tries = 0; keys.length < n && tries < 4 * n + 8; ++tries) {
    const k = r.pick(KEYS);
    if (keys.includes(k)) continue;
    if ([...keys, ...existing].some((o) => keysCollide(o, k))) {
      ORACLE_FAULTS.collidingKeys++;
      continue;
    }
    keys.push(k);
  }
  return keys;
}

function value(r, depth) {
  if (depth >= 3 || r.chance(0.45)) return scalar(r);
  const o = {};
  // Children that orderBy=h / v / h/x can find.
  if (r.chance(0.4)) o.h = r.chance(0.3) ? { x: scalar(r) } : scalar(r);
  if (r.chance(0.3)) o.v = scalar(r);
  for (const k of siblingKeys(r, r.int(0, 3), Object.keys(o))) {
    if (!(k in o)) o[k] = value(r, depth + 1);
  }
  return Object.keys(o).length ? o : scalar(r);
}

function dataset(r) {
  const o = {};
  for (const k of siblingKeys(r, r.int(2, 8))) o[k] = value(r, 1);
  return o;
}

// Paths that exist in `data`, their leaves' children (below a leaf), or new ones.
function allPaths(v, prefix, out) {
  out.push(prefix);
  if (v !== null && typeof v === 'object') {
    for (const k of Object.keys(v)) allPaths(v[k], prefix ? prefix + '/' + k : k, out);
  }
  return out;
}
function childrenAt(data, path) {
  let v = data;
  for (const s of path ? path.split('/') : []) v = v !== null && typeof v === 'object' && s in v ? v[s] : null;
  return v !== null && typeof v === 'object' ? Object.keys(v) : [];
}
function randomPath(r, data, allowRoot) {
  const paths = allPaths(data, '', []).filter((p) => allowRoot || p !== '');
  let p = paths.length ? r.pick(paths) : '';
  const extra = r.chance(0.35) ? r.int(1, 2) : 0;
  for (let i = 0; i < extra; ++i) {
    const k = siblingKeys(r, 1, childrenAt(data, p))[0];
    if (k === undefined) break;
    p = p ? p + '/' + k : k;
  }
  if (!p && !allowRoot) p = siblingKeys(r, 1, childrenAt(data, ''))[0] || 'a';
  return p;
}

const INC = (n) => ({ '.sv': { increment: n } });

function operation(r, data) {
  const t = r.int(0, 99);
  if (t < 22) return { t: 'set', p: randomPath(r, data, false), v: r.chance(0.1) ? null : value(r, 1) };
  if (t < 44) {
    const p = randomPath(r, data, true);
    const v = {};
    const n = r.int(1, 3);
    const base = childrenAt(data, p);
    for (let i = 0; i < n; ++i) {
      const taken = base.concat(Object.keys(v).map((x) => x.split('/')[0]));
      let k = r.chance(0.7) && base.length ? r.pick(base) : siblingKeys(r, 1, taken)[0];
      if (!k || taken.some((x) => keysCollide(x, k))) continue;
      if (r.chance(0.3)) k += '/' + (siblingKeys(r, 1, childrenAt(data, p ? p + '/' + k : k))[0] || 'a');
      const roll = r.int(0, 9);
      v[k] = roll < 4 ? null : roll < 5 ? INC(r.pick([1, -2, 2.5])) : value(r, 1);
    }
    if (r.chance(0.05)) v[Object.keys(v)[0] + '/deeper'] = 1;  // overlapping paths: both refuse
    return { t: 'update', p, v };
  }
  if (t < 66) return { t: 'remove', p: randomPath(r, data, false) };
  if (t < 74) return { t: 'push', p: randomPath(r, data, true), v: value(r, 1) };
  if (t < 90) return { t: 'inc', p: randomPath(r, data, false), n: r.pick([1, 2, -3, 0.5, 1e300, -1e300, 7]) };
  return { t: 'set', p: randomPath(r, data, false), v: r.chance(0.5) ? null : {} };
}

function query(r, data) {
  const q = { p: r.chance(0.8) ? '' : randomPath(r, data, false) };
  q.orderBy = r.pick(['$key', '$value', 'h', 'v', 'h/x', '$key', '$value', 'h']);
  q.bare = r.chance(0.5);  // tetherd takes orderBy bare or JSON-quoted; the client has one form
  const bound = () => {
    if (q.orderBy === '$key') return r.pick(KEYS);
    const t = r.int(0, 9);
    if (t === 0) return null;
    if (t === 1) return r.chance(0.5);
    if (t <= 5) return r.pick(NUMBERS.concat([-3, 0, 3, 5, 12]));
    return r.pick(STRINGS.concat(KEYS));
  };
  const roll = r.int(0, 9);
  if (roll < 2) q.equalTo = bound();
  else {
    if (roll < 6) q.startAt = bound();
    if (roll >= 4 && roll < 8) q.endAt = bound();
  }
  const lim = r.int(0, 9);
  if (lim < 3) q.limitToFirst = r.int(1, 5);
  else if (lim < 6) q.limitToLast = r.int(1, 5);
  return q;
}

function describeQuery(q) {
  const parts = ['orderBy=' + (q.bare ? q.orderBy : JSON.stringify(q.orderBy))];
  for (const k of ['startAt', 'endAt', 'equalTo']) if (k in q) parts.push(k + '=' + JSON.stringify(q[k]));
  for (const k of ['limitToFirst', 'limitToLast']) if (k in q) parts.push(k + '=' + q[k]);
  return '/' + q.p + '?' + parts.join('&');
}
function describeOp(o) {
  if (o.t === 'remove') return `remove /${o.p}`;
  if (o.t === 'inc') return `set /${o.p} = increment(${o.n})`;
  return `${o.t} /${o.p} ${JSON.stringify(o.v)}`;
}

// Keys anywhere in `v` that have a sibling the oracle collides with (see ORACLE_FAULTS).
function hasCollidingSiblings(v) {
  if (v === null || typeof v !== 'object') return false;
  const keys = Object.keys(v);
  return keys.some((a) => keys.some((b) => keysCollide(a, b))) || keys.some((k) => hasCollidingSiblings(v[k]));
}
// A $key bound equal to a child key as far as the oracle is concerned, but another key.
function boundCollides(q, children) {
  if (q.orderBy !== '$key') return false;
  return ['startAt', 'endAt', 'equalTo'].some((b) => b in q && children.some((k) => keysCollide(k, q[b])));
}

// The absolute paths (in the case) where `o` increments.
function incrementPaths(o) {
  const join = (a, b) => (a ? a + '/' + b : b);
  if (o.t === 'inc') return [o.p];
  if (o.t !== 'update') return [];
  return Object.keys(o.v).filter((k) => o.v[k] !== null && typeof o.v[k] === 'object' && '.sv' in o.v[k])
    .map((k) => join(o.p, k));
}
// True if an increment in `o` lies where an earlier update wrote through a multi-segment child
// path that the oracle's write tree misses (ORACLE_FAULTS.incrementBelowDeepUpdate).
function hitsDeepUpdateFault(earlier, o) {
  const segs = (p) => p.split('/').filter(Boolean);
  const overlap = (a, b) => a.every((x, i) => i >= b.length || b[i] === x);
  return incrementPaths(o).some((target) => earlier.some((u) => {
    if (u.t !== 'update') return false;
    const base = segs(u.p), at = segs(target);
    if (at.length <= base.length || !overlap(base, at) || base.some((x, i) => at[i] !== x)) return false;
    const rel = at.slice(base.length);
    return Object.keys(u.v).some((k) => segs(k).length > 1 && segs(k)[0] === rel[0] && overlap(segs(k), rel));
  }));
}

function generateCase(seed, index, opsPerCase) {
  const r = rng((seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0);
  const data = dataset(r);
  const queries = [];
  for (let i = r.int(1, 3); i > 0; --i) queries.push(query(r, data));
  // Ops are generated against the model the client will hold: replay it on a copy.
  const ops = [], fresh = [];
  let model = JSON.parse(JSON.stringify(data));
  for (let i = 0; i < opsPerCase; ++i) {
    let o = operation(r, model);
    for (let tries = 0; hitsDeepUpdateFault(ops, o) && tries < 20; ++tries) {
      ORACLE_FAULTS.incrementBelowDeepUpdate++;
      o = operation(r, model);
    }
    if (hitsDeepUpdateFault(ops, o)) o = { t: 'remove', p: o.p || 'a' };
    ops.push(o);
    fresh.push(query(r, model));
    model = applyModel(model, o);
  }
  return { data, queries, ops, fresh };
}

// A rough model of the data, only to aim the next operations at existing paths (the oracle, not
// this, decides what is right).
function applyModel(model, o) {
  const setAt = (m, path, v) => {
    const segs = path.split('/').filter(Boolean);
    if (!segs.length) return v;
    const root = m !== null && typeof m === 'object' ? m : {};
    let cur = root;
    for (let i = 0; i < segs.length - 1; ++i) {
      if (cur[segs[i]] === null || typeof cur[segs[i]] !== 'object') {
        if (v === null) return root;
        cur[segs[i]] = {};
      }
      cur = cur[segs[i]];
    }
    if (v === null) delete cur[segs[segs.length - 1]];
    else cur[segs[segs.length - 1]] = v;
    return root;
  };
  const clone = (v) => (v === undefined ? null : JSON.parse(JSON.stringify(v)));
  if (o.t === 'set') return setAt(model, o.p, clone(o.v));
  if (o.t === 'remove') return setAt(model, o.p, null);
  if (o.t === 'inc') return setAt(model, o.p, o.n);
  if (o.t === 'push') return model;  // its key is not known here
  if (o.t === 'update') {
    for (const k of Object.keys(o.v)) model = setAt(model, o.p ? o.p + '/' + k : k, clone(o.v[k]));
  }
  return model;
}

module.exports = {
  ORACLE_FAULTS, INC, allPaths, applyModel, boundCollides, childrenAt, describeOp, describeQuery,
  generateCase, hasCollidingSiblings,
};
