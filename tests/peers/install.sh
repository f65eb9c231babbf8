#!/usr/bin/env bash
# Installs the npm test peers (pinned) into tests/peers/node_modules. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
if [ -d node_modules/coap ] && [ -d node_modules/firebase-server ] && [ -d node_modules/firebase ] && [ -d node_modules/node-coap-client ]; then
  echo "peers: npm test peers present"; exit 0
fi
echo "peers: installing npm test peers (coap, node-coap-client, firebase-server, firebase)"
npm install --no-audit --no-fund --loglevel=error
