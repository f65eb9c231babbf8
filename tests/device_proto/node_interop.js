// Interop with npm `coap` (node-coap): node node_interop.js HOST PORT
// PUT+GET /echo, GET /large (Block2), observe /counter for 3 notifications.
// Prints one line per check and exits non-zero on the first failure.
'use strict';
const coap = require('coap');
const [host, port] = [process.argv[2], Number(process.argv[3])];
const agent = new coap.Agent({ type: host.includes(':') ? 'udp6' : 'udp4' });

function request(opts, body) {
  return new Promise((resolve, reject) => {
    const req = coap.request({ hostname: host, port, agent, ...opts });
    req.on('response', resolve);
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

function fail(msg) {
  console.log('FAIL ' + msg);
  process.exit(1);
}

async function main() {
  setTimeout(() => fail('timeout'), 15000).unref();
  let res = await request({ method: 'PUT', pathname: '/echo' }, 'from-node');
  if (res.code !== '2.04') fail('put code ' + res.code);
  res = await request({ method: 'GET', pathname: '/echo' });
  if (res.code !== '2.05' || res.payload.toString() !== 'from-node') fail('get echo ' + res.payload);
  console.log('OK echo');

  res = await request({ method: 'GET', pathname: '/large' });
  const large = res.payload.toString();
  if (large.length !== 3000 || large[26] !== 'A' || large[2999] !== String.fromCharCode(65 + 2999 % 26)) fail('large len ' + large.length);
  console.log('OK large ' + large.length);

  const values = [];
  await new Promise((resolve, reject) => {
    const req = coap.request({ hostname: host, port, agent, pathname: '/counter', observe: true });
    req.on('response', (stream) => {
      stream.on('data', (d) => {
        values.push(Number(d.toString()));
        if (values.length === 4) {
          stream.close();
          resolve();
        }
      });
    });
    req.on('error', reject);
    req.end();
  });
  for (let i = 1; i < values.length; ++i) if (!(values[i] > values[i - 1])) fail('not increasing ' + values);
  console.log('OK observe ' + values.join(','));
  process.exit(0);
}

main().catch((e) => fail(e.stack || String(e)));
