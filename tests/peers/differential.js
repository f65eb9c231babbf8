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
// The cases and the oracle's known faults they avoid: differential_cases.js; the two sides:
// differential_sides.js.
'use strict';

const {
  ORACLE_FAULTS, allPaths, applyModel, boundCollides, childrenAt, describeOp, describeQuery, generateCase,
  hasCollidingSiblings,
} = require('./differential_cases');
const { Oracle, Tetherd } = require('./differential_sides');

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
    const script = generateCase(SEED, i, OPS);
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
