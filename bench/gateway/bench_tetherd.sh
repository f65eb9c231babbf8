# Sourced by run-e2e.sh and run-memory.sh: a fresh tetherd as both benchmarks run it.
#   start_tetherd TETHERD: writes $work/tether.yaml (local only, a fresh durable store under $work,
#   sessions that outlive the run), starts TETHERD on free loopback ports and waits for /healthz.
#   Sets spid, port (CoAP) and admin. Needs $work.
free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_tetherd() {
  port=$(free_port); admin=$(free_port)
  rm -rf "$work/store"
  cat > "$work/tether.yaml" <<YAML
device:
  listen: "127.0.0.1:$port"
  heartbeat_target: 10m
  session_timeout: 20m
admin:
  listen: "127.0.0.1:$admin"
store:
  path: $work/store
log:
  level: warn
apps:
  - id: myapp
YAML
  "$1" -c "$work/tether.yaml" 2>>"$work/tetherd.log" & spid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$admin/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
}
