# Shared by run.sh and soak.sh (sourced): nginx present, hookwall and the load generator
# built (release, or debug with --quick), a scratch folder whose processes are stopped
# and which is removed on exit, and free loopback ports.

secret=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw

command -v nginx >/dev/null || {
  echo "== installing nginx"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
}

# build QUICK: sets $hookwall and $loadgen to the built binaries.
build() {
  local profile=release
  if (($1)); then
    profile=debug
    cargo build --quiet --locked --bin hookwall --example loadgen
  else
    cargo build --quiet --release --locked --bin hookwall --example loadgen
  fi
  local target_dir
  target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  hookwall="$target_dir/$profile/hookwall"
  loadgen="$target_dir/$profile/examples/loadgen"
}

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# start_nginx NAME CONF PORT [BACKEND]: nginx with benches/load/CONF, its @DIR@, @PORT@ and
# @BACKEND@ filled in, under $work/NAME; prefixed by ${server_pin[@]} if set. $! is its pid.
server_pin=()
start_nginx() {
  mkdir -p "$work/$1"
  sed -e "s|@DIR@|$work/$1|g; s|@PORT@|$3|g; s|@BACKEND@|${4:-}|g" "$here/$2" >"$work/$1/nginx.conf"
  "${server_pin[@]}" nginx -c "$work/$1/nginx.conf" -p "$work/$1/" &
  pids+=($!)
}

# start_hookwall PORT ADMIN_PORT ROUTES [NAME] [BINARY]: hookwall (log level warn, default
# limits but no shutdown_delay: the scripts stop it with SIGTERM) on loopback with the
# given [[routes]] TOML, prefixed by ${server_pin[@]} if set; sets $hw_pid. NAME (default
# hookwall) names its config and log in $work; BINARY (default $hookwall) is what runs: a
# build from before `shutdown_delay` existed gets no [limits] table.
start_hookwall() {
  local name=${4:-hookwall} binary=${5:-$hookwall} limits='[limits]
shutdown_delay = "0s"'
  [[ -n ${5:-} ]] && ! "$binary" --version >/dev/null 2>&1 && { echo "$binary does not run" >&2; exit 1; }
  if [[ -n ${5:-} ]] && ! grep -q shutdown_delay "$binary"; then limits=''; fi
  cat >"$work/$name.toml" <<TOML
[listen]
addr = "127.0.0.1:$1"
[admin]
addr = "127.0.0.1:$2"
[log]
level = "warn"
$limits
$3
TOML
  "${server_pin[@]}" "$binary" run -c "$work/$name.toml" 2>"$work/$name.log" &
  hw_pid=$!
  pids+=($hw_pid)
}

# start_collector PORT: an OTLP/HTTP collector on loopback that takes every batch (200 on a
# kept-alive connection) and does nothing else, for TRACING=1: what is measured is
# hookwall's side of tracing.
start_collector() {
  python3 - "$1" <<'PY' &
import http.server, sys
class Collector(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Collector).serve_forever()
PY
  pids+=($!)
  wait_port "$1"
}

# free_ports N: N loopback ports free right now, on one line.
free_ports() {
  python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])' "$1"
}

# wait_port PORT: until something listens there (10 s at most).
wait_port() {
  for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.05; done
  echo "port $1 never opened" >&2
  exit 1
}
