// Reads one path once with the official Firebase JS SDK (tests/peers, 7.24), as an app watching
// the database would, and prints its value as JSON. Exit 2: the SDK refused or failed (message on
// stderr), 3: no answer within 8 s. Usage: NODE_PATH=tests/peers/node_modules node sdk_read.js URL PATH
const firebase = require('firebase/app');
require('firebase/database');

const [url, path] = process.argv.slice(2);
setTimeout(() => { console.error('no answer within 8 s'); process.exit(3); }, 8000);
try {
  firebase.initializeApp({ databaseURL: url });
  firebase.database().ref(path).once('value').then(
    (snap) => { console.log(JSON.stringify(snap.val())); process.exit(0); },
    (err) => { console.error(err.message); process.exit(2); });
} catch (err) {
  console.error(err.message);
  process.exit(2);
}
