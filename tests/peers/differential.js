// Differential test of the local copy's data semantics: tetherd (local-only mode, device protocol
// over CoAP with JSON bodies) against the official Firebase client (npm firebase 7.24.0) on npm
// firebase-server 1.1.0, whose data model is that same client engine. The client is the oracle for
// what a write does and what a query selects, in which order; not our docs.
//
//   node differential.js --port <tetherd CoAP port> [--seed S] [--cases N] [--ops N]
//   env: TETHER_DIFF_SEED, TETHER_DIFF_CASES, TETHER_DIFF_OPS (override the defaults / flags),
//        TETHER_DIFF_CASE=i (only case i of the seed), TETHER_DIFF_REPLAY='<json printed on a failure>'
//
// Each case: a seeded random dataset at /d/<run>-<case> on both sides, then a sequence of
// operations (set, update with null members and child paths, remove at any depth including below
// a leaf, push, increments, sets of null) each followed by a read of the whole case and a re-run
// of the case's standing queries plus one new random query (orderBy $key / $value / a child path,
// startAt / endAt / equalTo of every bound type, limitToFirst / limitToLast). A query result is
// compared as children AND order: the client gives its order (forEach); tetherd answers an
// unordered map, so its order is read out with limitToFirst=1..n (limitToLast for limitToLast).
// A mismatch is minimized (ops, dataset children, query options dropped while it persists) and
// printed with the JSON that replays it. Exit status 1 on any mismatch, 2 on a broken environment.
'use strict';

const coap = require('coap');
const dgram = require('dgram');
const FirebaseServer = require('firebase-server');
const firebase = require('firebase/app');
require('firebase/database');

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

// ---------------------------------------------------------------- arguments
function arg(name, env, fallback) {
  if (process.env[env] !== undefined && process.env[env] !== '') return process.env[env];
  const i = process.argv.indexOf('--' + name);
  return i > 0 ? process.argv[i + 1] : fallback;
}
const PORT = Number(arg('port', 'TETHER_DIFF_PORT', '0'));
const SEED = Number(arg('seed', 'TETHER_DIFF_SEED', '20210721'));
const CASES = Number(arg('cases', 'TETHER_DIFF_CASES', '250'));
const OPS = Number(arg('ops', 'TETHER_DIFF_OPS', '10'));
const ONLY_CASE = process.env.TETHER_DIFF_CASE !== undefined ? Number(process.env.TETHER_DIFF_CASE) : null;
const REPLAY = process.env.TETHER_DIFF_REPLAY || null;
const MAX_MINIMIZED = 5;  // mismatches minimized in full; later ones are printed as found
const RUN = Date.now().toString(36);
const VERBOSE = !!process.env.TETHER_DIFF_VERBOSE;

// Every wait on either side is bounded: a hang is reported as such, not as a CI timeout.
function bounded(promise, what, ms = 10000) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(what + ' did not answer within ' + ms + ' ms')), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

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
const ORDER_CHILDREN = ['h', 'v', 'h/x'];

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

// ---------------------------------------------------------------- tetherd over CoAP
class Tetherd {
  constructor(port) {
    this.port = port;
    // One socket for the whole run: the session is bound to its address (an agent of its own
    // would close its socket whenever idle and come back from another port).
    this.socket = dgram.createSocket('udp4');
    this.cs = null;
    this.requests = 0;
  }
  async bind() {
    await new Promise((resolve) => this.socket.bind(0, '127.0.0.1', resolve));
    this.agent = new coap.Agent({ socket: this.socket });
  }
  request(method, segs, body, params) {
    this.requests++;
    return new Promise((resolve, reject) => {
      const options = { 'Uri-Path': segs.map((s) => Buffer.from(s, 'utf8')) };
      const q = (params || []).concat(this.cs ? ['.cs=' + this.cs] : []);
      if (q.length) options['Uri-Query'] = q.map((s) => Buffer.from(s, 'utf8'));
      const req = coap.request({
        hostname: '127.0.0.1', port: this.port, method, agent: this.agent, options,
        accept: 'application/json', contentFormat: body !== undefined ? 'application/json' : undefined,
      });
      const timer = setTimeout(() => reject(new Error(`tetherd did not answer ${method} /${segs.join('/')}`)), 10000);
      req.on('response', (res) => {
        clearTimeout(timer);
        resolve({ code: res.code, payload: res.payload.toString('utf8') });
      });
      req.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      if (body !== undefined) req.write(JSON.stringify(body));
      req.end();
    });
  }
  async open() {
    if (!this.agent) await this.bind();
    this.cs = null;
    const r = await this.request('POST', ['.cs'], undefined, ['v=2']);
    if (r.code !== '2.05') throw new Error('tetherd refused the session: ' + r.code + ' ' + r.payload);
    this.cs = JSON.parse(r.payload).s;
  }
  segs(root, p) { return root.split('/').concat(p ? p.split('/') : []); }
  async write(root, o) {
    const segs = this.segs(root, o.p);
    let r;
    if (o.t === 'set') r = await this.request('PUT', segs, o.v);
    else if (o.t === 'inc') r = await this.request('PUT', segs, INC(o.n));
    else if (o.t === 'update') r = await this.request('PATCH', segs, o.v);
    else if (o.t === 'remove') r = await this.request('DELETE', segs);
    else if (o.t === 'push') r = await this.request('POST', segs, o.v);
    return { ok: r.code === '2.05', detail: r.code + ' ' + r.payload, key: o.t === 'push' ? r.payload : undefined };
  }
  async read(root, p) {
    const r = await this.request('GET', this.segs(root, p));
    if (r.code !== '2.05') throw new Error(`tetherd GET /${root}/${p}: ${r.code} ${r.payload}`);
    return JSON.parse(r.payload);
  }
  params(q, limit) {
    const out = ['orderBy=' + (q.bare ? q.orderBy : JSON.stringify(q.orderBy))];
    for (const k of ['startAt', 'endAt', 'equalTo']) if (k in q) out.push(k + '=' + JSON.stringify(q[k]));
    const lim = Object.assign({}, q, limit || {});
    for (const k of ['limitToFirst', 'limitToLast']) if (k in lim) out.push(k + '=' + lim[k]);
    return out;
  }
  async query(root, q, limit) {
    const r = await this.request('GET', this.segs(root, q.p), undefined, this.params(q, limit));
    if (r.code !== '2.05') return { refused: r.code + ' ' + r.payload };
    return { value: JSON.parse(r.payload) };
  }
  // The order of the children tetherd selects, read out with growing limits.
  async order(root, q, value) {
    const n = Object.keys(value).length;
    const last = 'limitToLast' in q;
    const seen = [];
    for (let k = 1; k < n; ++k) {
      const r = await this.query(root, q, last ? { limitToLast: k } : { limitToFirst: k });
      if (r.refused) return null;
      const keys = r.value !== null && typeof r.value === 'object' ? Object.keys(r.value) : [];
      const added = keys.filter((x) => !seen.includes(x));
      if (added.length !== 1) return { broken: `limit ${k} answered ${JSON.stringify(keys)} after ${JSON.stringify(seen)}` };
      seen.push(added[0]);
    }
    seen.push(Object.keys(value).find((x) => !seen.includes(x)));
    return { keys: last ? seen.reverse() : seen };
  }
}

// ---------------------------------------------------------------- the official client
class Oracle {
  async start() {
    this.server = new FirebaseServer({ port: 0, address: '127.0.0.1' });
    await new Promise((resolve) => this.server.wss.on('listening', resolve));
    const allowed = { allowed: true };
    const rules = { as: () => ({ read: () => allowed, write: () => ({ allowed: true, newDatabase: rules }),
                                 update: () => ({ allowed: true, newDatabase: rules }) }), with: () => rules };
    this.server.targaryen = rules;  // see ORACLE_FAULTS: targaryen refuses increments
    this.app = firebase.initializeApp({ databaseURL: `ws://127.0.0.1:${this.server.getPort()}` }, 'oracle');
    this.db = this.app.database();
  }
  ref(root, p) { return this.db.ref(root + (p ? '/' + p : '')); }
  async write(root, o) {
    try {
      const ref = this.ref(root, o.p);
      const what = 'firebase ' + describeOp(o);
      if (o.t === 'set') await bounded(ref.set(o.v), what);
      else if (o.t === 'inc') await bounded(ref.set(INC(o.n)), what);
      else if (o.t === 'update') await bounded(ref.update(o.v), what);
      else if (o.t === 'remove') await bounded(ref.remove(), what);
      else if (o.t === 'push') {
        const child = ref.push(o.v);
        await bounded(child, what);
        return { ok: true, key: child.key };
      }
      return { ok: true };
    } catch (e) {
      if (/did not answer/.test(String(e.message))) throw e;
      return { ok: false, detail: String(e.message || e).slice(0, 160) };
    }
  }
  static plain(snap) {  // the client's val() turns integer keys into arrays: build objects instead
    if (!snap.hasChildren()) return snap.val();
    const o = {};
    snap.forEach((c) => {
      o[c.key] = Oracle.plain(c);
    });
    return o;
  }
  async read(root, p) { return Oracle.plain(await bounded(this.ref(root, p).once('value'), `firebase read /${root}/${p}`)); }
  build(root, q) {
    let ref = this.ref(root, q.p);
    ref = q.orderBy === '$key' ? ref.orderByKey() : q.orderBy === '$value' ? ref.orderByValue() : ref.orderByChild(q.orderBy);
    if ('startAt' in q) ref = ref.startAt(q.startAt);
    if ('endAt' in q) ref = ref.endAt(q.endAt);
    if ('equalTo' in q) ref = ref.equalTo(q.equalTo);
    if ('limitToFirst' in q) ref = ref.limitToFirst(q.limitToFirst);
    if ('limitToLast' in q) ref = ref.limitToLast(q.limitToLast);
    return ref;
  }
  async query(root, q) {
    let ref;
    try {
      ref = this.build(root, q);
    } catch (e) {
      return { refused: String(e.message || e).slice(0, 160) };
    }
    const snap = await bounded(ref.once('value'), 'firebase query ' + describeQuery(q));
    const keys = [];
    if (snap.hasChildren()) snap.forEach((c) => { keys.push(c.key); });
    return { value: Oracle.plain(snap), keys };
  }
}

// ---------------------------------------------------------------- comparison
function same(a, b) {
  if (a === b) return true;
  if (typeof a === 'number' && typeof b === 'number') return a === b || (Number.isNaN(a) && Number.isNaN(b));
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  const ka = Object.keys(a), kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && same(a[k], b[k]));
}
// tetherd's push keys become the client's (same order of creation on both sides).
function translate(v, keys) {
  if (v === null || typeof v !== 'object') return v;
  const o = {};
  for (const k of Object.keys(v)) o[keys.get(k) || k] = translate(v[k], keys);
  return o;
}

// ---------------------------------------------------------------- one case
let caseCounter = 0;
const stats = { cases: 0, ops: 0, reads: 0, queries: 0, orderChecks: 0, refusedBoth: 0 };

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

// Runs `script` ({data, ops, queries, fresh}) on a fresh location of both sides. Normally it
// checks the whole value and every query once before the first op and after each op (plus the
// op's fresh query). With `only` (a mismatch kind, for minimizing) it checks only after the last
// op, and only that kind. Returns the first mismatch or null.
async function runScript(td, fb, script, only) {
  const root = `d/${RUN}-${caseCounter++}`;
  const pushKeys = new Map();
  const mismatch = (step, kind, detail) => ({ step, kind, detail });
  const r1 = await td.write(root, { t: 'set', p: '', v: script.data });
  const r2 = await fb.write(root, { t: 'set', p: '', v: script.data });
  if (!r1.ok || !r2.ok) return mismatch(-1, 'dataset', { tetherd: r1.detail, firebase: r2.detail });
  const check = async (step, queries) => {
    const want = await fb.read(root, '');
    const got = translate(await td.read(root, ''), pushKeys);
    stats.reads++;
    if ((!only || only === 'value') && !same(got, want)) {
      if (hasCollidingSiblings(got)) {
        ORACLE_FAULTS.collidingKeys++;
        return mismatch(step, 'oracle-fault', {});
      }
      return mismatch(step, 'value', { firebase: want, tetherd: got });
    }
    if (only === 'value' || only === 'write') return null;
    for (const q of queries) {
      if (boundCollides(q, childrenAt(want, q.p))) {
        ORACLE_FAULTS.collidingKeys++;
        continue;
      }
      stats.queries++;
      if (VERBOSE) console.log(`  ${root} query ${describeQuery(q)}`);
      const w = await fb.query(root, q);
      const g = await td.query(root, q);
      if (w.refused && g.refused) {
        stats.refusedBoth++;
        continue;
      }
      if (w.refused || g.refused) {
        return mismatch(step, 'query', { query: q, firebase: w.refused || w.value, tetherd: g.refused || g.value });
      }
      const gv = translate(g.value, pushKeys);
      if (!same(gv, w.value)) return mismatch(step, 'query', { query: q, firebase: w.value, tetherd: gv });
      if (w.keys.length >= 2 && only !== 'query') {
        stats.orderChecks++;
        const o = await td.order(root, q, g.value);
        const gk = o && o.keys ? o.keys.map((k) => pushKeys.get(k) || k) : null;
        if (!o || o.broken || JSON.stringify(gk) !== JSON.stringify(w.keys)) {
          return mismatch(step, 'order', { query: q, firebase: w.keys, tetherd: o && o.broken ? o.broken : gk });
        }
      }
    }
    return null;
  };
  if (!only || script.ops.length === 0) {
    const m = await check(0, script.queries);
    if (m || only) return m;
  }
  for (let i = 0; i < script.ops.length; ++i) {
    const o = script.ops[i];
    const final = i === script.ops.length - 1;
    if (VERBOSE) console.log(`  ${root} op ${i + 1}: ${describeOp(o)}`);
    stats.ops++;
    const a = await td.write(root, o);
    const b = await fb.write(root, o);
    if (o.t === 'push' && a.ok && b.ok) pushKeys.set(a.key, b.key);
    if (a.ok !== b.ok && (!only || (final && only === 'write'))) {
      return mismatch(i + 1, 'write', { op: o, firebase: b.ok ? 'accepted' : b.detail, tetherd: a.ok ? 'accepted' : a.detail });
    }
    if (only && !final) continue;
    const m = await check(i + 1, only ? script.queries : script.queries.concat(script.fresh[i] ? [script.fresh[i]] : []));
    if (m) return m;
  }
  return null;
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

function generateCase(seed, index) {
  const r = rng((seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0);
  const data = dataset(r);
  const queries = [];
  for (let i = r.int(1, 3); i > 0; --i) queries.push(query(r, data));
  // Ops are generated against the model the client will hold: replay it on a copy.
  const ops = [], fresh = [];
  let model = JSON.parse(JSON.stringify(data));
  for (let i = 0; i < OPS; ++i) {
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

// ---------------------------------------------------------------- minimization
function pruned(v) {  // without the empty objects a removal leaves (they are null in Firebase)
  if (v === null || typeof v !== 'object') return v;
  const o = {};
  for (const k of Object.keys(v)) {
    const c = pruned(v[k]);
    if (c !== null) o[k] = c;
  }
  return Object.keys(o).length ? o : null;
}

async function minimize(td, fb, script, found) {
  // The script that reproduces `found` with its check only at the end.
  let best = {
    data: script.data,
    ops: script.ops.slice(0, Math.max(0, found.step)),
    queries: found.detail.query ? [found.detail.query] : [],
    fresh: [],
  };
  let last = found;
  let budget = 150;
  const still = async (cand) => {
    if (budget-- <= 0) return null;
    const m = await runScript(td, fb, cand, found.kind);
    return m && m.kind === found.kind ? m : null;
  };
  let progress = true;
  while (progress && budget > 0) {
    progress = false;
    for (let i = best.ops.length - 1; i >= 0; --i) {  // drop operations
      const cand = Object.assign({}, best, { ops: best.ops.filter((_, j) => j !== i) });
      const m = await still(cand);
      if (m) [best, last, progress] = [cand, m, true];
    }
    if (best.data && typeof best.data === 'object') {  // drop dataset children, deepest first
      for (const p of allPaths(best.data, '', []).filter(Boolean).reverse()) {
        const data = pruned(applyModel(JSON.parse(JSON.stringify(best.data)), { t: 'remove', p }));
        if (data === null || typeof data !== 'object' || !Object.keys(data).length) continue;
        const cand = Object.assign({}, best, { data });
        const m = await still(cand);
        if (m) [best, last, progress] = [cand, m, true];
      }
    }
    if (best.queries.length) {  // drop query options
      for (const k of ['limitToFirst', 'limitToLast', 'startAt', 'endAt', 'equalTo']) {
        if (!(k in best.queries[0])) continue;
        const q = Object.assign({}, best.queries[0]);
        delete q[k];
        const cand = Object.assign({}, best, { queries: [q] });
        const m = await still(cand);
        if (m) [best, last, progress] = [cand, m, true];
      }
    }
  }
  return { script: best, mismatch: last };
}

function report(seed, index, script, m, minimized) {
  const lines = [];
  lines.push(`MISMATCH (${m.kind}) seed=${seed} case=${index}${minimized ? ' (minimized)' : ''}`);
  lines.push(`  dataset: ${JSON.stringify(script.data)}`);
  const ops = m.step >= 0 ? script.ops.slice(0, m.step) : [];
  ops.forEach((o, i) => lines.push(`  op ${i + 1}: ${describeOp(o)}`));
  if (m.detail.query) lines.push(`  query: ${describeQuery(m.detail.query)}`);
  if (m.detail.op) lines.push(`  write: ${describeOp(m.detail.op)}`);
  lines.push(`  firebase 7.24: ${JSON.stringify(m.detail.firebase)}`);
  lines.push(`  tetherd:       ${JSON.stringify(m.detail.tetherd)}`);
  const replay = { data: script.data, ops, queries: m.detail.query ? [m.detail.query] : [] };
  lines.push(`  replay: TETHER_DIFF_REPLAY='${JSON.stringify(replay).replace(/'/g, "'\\''")}'`);
  if (seed !== 'replay') lines.push(`  rerun the case: TETHER_DIFF_SEED=${seed} TETHER_DIFF_CASE=${index}`);
  console.log(lines.join('\n'));
}

// ---------------------------------------------------------------- main
async function main() {
  if (!PORT) {
    console.log('usage: node differential.js --port <tetherd CoAP port> [--seed S] [--cases N] [--ops N]');
    process.exit(2);
  }
  const started = Date.now();
  const td = new Tetherd(PORT);
  await td.open();
  const fb = new Oracle();
  await fb.start();
  let mismatches = 0;
  if (REPLAY) {
    const s = JSON.parse(REPLAY);
    const m = await runScript(td, fb, { data: s.data, ops: s.ops || [], queries: s.queries || [], fresh: [] }, null);
    if (m) report('replay', 0, s, m, false);
    console.log(m ? 'replay: MISMATCH' : 'replay: agree');
    process.exit(m ? 1 : 0);
  }
  const first = ONLY_CASE !== null ? ONLY_CASE : 0;
  const last = ONLY_CASE !== null ? ONLY_CASE : CASES - 1;
  for (let i = first; i <= last; ++i) {
    const script = generateCase(SEED, i);
    stats.cases++;
    const m = await runScript(td, fb, script, null);
    if (!m || m.kind === 'oracle-fault') continue;
    mismatches++;
    if (mismatches <= MAX_MINIMIZED) {
      const min = await minimize(td, fb, script, m);
      report(SEED, i, min.script, Object.assign({}, min.mismatch, { step: min.script.ops.length }), true);
    } else {
      report(SEED, i, script, m, false);
    }
  }
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  console.log(`differential: seed=${SEED} cases=${stats.cases} ops=${stats.ops} reads=${stats.reads} ` +
              `queries=${stats.queries} order-checks=${stats.orderChecks} refused-by-both=${stats.refusedBoth} ` +
              `coap-requests=${td.requests} oracle-faults-avoided=${JSON.stringify(ORACLE_FAULTS)} ` +
              `mismatches=${mismatches} in ${secs} s`);
  process.exit(mismatches ? 1 : 0);
}

main().catch((e) => {
  console.log('differential: broken environment or harness: ' + (e.stack || e));
  process.exit(2);
});
