// The two sides of the differential suite (differential.js): tetherd over the device protocol
// (CoAP, JSON bodies, one session on one socket) and the official Firebase client (firebase 7.24)
// on npm firebase-server. Every wait is bounded.
'use strict';

const coap = require('coap');
const dgram = require('dgram');
const FirebaseServer = require('firebase-server');
const firebase = require('firebase/app');
require('firebase/database');

const { INC, describeOp, describeQuery } = require('./differential_cases');

// Every wait on either side is bounded: a hang is reported as such, not as a CI timeout.
function bounded(promise, what, ms = 10000) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(what + ' did not answer within ' + ms + ' ms')), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
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

module.exports = { Oracle, Tetherd };
