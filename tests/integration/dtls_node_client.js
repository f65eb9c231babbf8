// npm node-coap-client over DTLS-PSK against tetherd: node dtls_node_client.js HOST PORT IDENTITY KEY
// Opens a session, writes, waits until the gateway has put the DTLS session to sleep, then reads on
// the same DTLS connection (the gateway must restore it without a new handshake).
// Prints one line per check and exits non-zero on the first failure.
'use strict';
const { CoapClient } = require('node-coap-client');
const [host, port, identity, key] = process.argv.slice(2);
const base = `coaps://${host}:${port}`;
const opts = { keepAlive: true, confirmable: true };

function fail(msg) {
  console.log('FAIL ' + msg);
  process.exit(1);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// node-coap-client sends Content-Format 50 (JSON), so the gateway answers JSON: {"s":..,"l":..}.
function shortToken(payload) {
  try {
    return JSON.parse(payload.toString()).s;
  } catch (e) {
    fail('no short token in ' + payload.toString('hex'));
  }
}

async function main() {
  setTimeout(() => fail('timeout'), 25000).unref();
  CoapClient.setSecurityParams(host, { psk: { [identity]: key } });
  let r = await CoapClient.request(`${base}/.cs?v=2`, 'post', Buffer.alloc(0), opts);
  if (r.code.toString() !== '2.05') fail('open ' + r.code.toString());
  const s = shortToken(r.payload);
  console.log('OK open');
  r = await CoapClient.request(`${base}/devices/${identity}/n?.cs=${s}`, 'put', Buffer.from('42'), opts);
  if (r.code.toString() !== '2.05') fail('put ' + r.code.toString());
  console.log('OK put');
  await sleep(2500);  // sleep_after is 1 s
  r = await CoapClient.request(`${base}/devices/${identity}/n?.cs=${s}`, 'get', undefined, opts);
  if (r.code.toString() !== '2.05' || r.payload.toString() !== '42') {
    fail('get after sleep ' + r.code.toString() + ' ' + (r.payload ? r.payload.toString() : ''));
  }
  console.log('OK get after sleep');
  CoapClient.reset();
  process.exit(0);
}

main().catch((e) => fail(String(e)));
