#!/usr/bin/env bash
# Instructions per forwarded request, counted by valgrind's callgrind: this build and
# BASELINE (an older binary) each forward 1,000 signed 2.9 KB events to the nginx backend
# (after a warm-up), and the process's instructions are divided by the requests it
# answered. Unlike req/s on a shared machine, the count repeats to within a few hundred
# instructions, so it shows what a change to the request path costs; it does not show
# what the instructions cost in time (a `rep movsb` counts once per byte, a contended
# cache line not at all). Prints both totals and the functions whose counts moved most.
#
#   BASELINE=path/to/older/hookwall benches/load/instructions.sh   # release builds
#   TRACING=1 BASELINE=... benches/load/instructions.sh            # this build exports a
#                                                                  # trace of every request
#
# Env: REQUESTS (1000), TRACING (0). Needs valgrind (Debian's package) and nginx.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/benches/load"
baseline=${BASELINE:?BASELINE=path/to/an/older/hookwall}
requests=${REQUESTS:-1000}
command -v valgrind >/dev/null || {
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind >/dev/null
}

# shellcheck source=common.sh
source "$here/common.sh"
build 0
read -r backend_port < <(free_ports 1)
start_nginx backend nginx-backend.conf "$backend_port"
wait_port "$backend_port"

telemetry=''
if ((${TRACING:-0})); then
  read -r otlp_port < <(free_ports 1)
  start_collector "$otlp_port"
  telemetry="[telemetry]
otlp_endpoint = \"http://127.0.0.1:$otlp_port\""
fi

# count NAME BINARY [TOML]: writes $work/NAME.out (callgrind's dump of the measured
# requests) and prints "NAME: N requests, I instructions a request". TOML goes before the
# route.
count() {
  local name=$1 binary=$2 port admin vpid before after
  read -r port admin < <(free_ports 2)
  cat >"$work/$name.toml" <<TOML
[listen]
addr = "127.0.0.1:$port"
[admin]
addr = "127.0.0.1:$admin"
[log]
level = "warn"
${3:-}
[[routes]]
name = "bench"
path = "/bench"
secrets = ["$secret"]
upstream = "http://127.0.0.1:$backend_port/"
TOML
  valgrind --tool=callgrind --callgrind-out-file="$work/$name.%p" "$binary" run -c "$work/$name.toml" 2>"$work/$name.vg" &
  vpid=$!
  pids+=("$vpid")
  wait_port "$port"
  local rate=200 seconds=$((requests / 200))
  "$loadgen" --url "http://127.0.0.1:$port/bench" --secret "$secret" --connections 4 \
    --duration 2s --rate 100 --id-prefix "warm_${name}_" >/dev/null
  total() { curl -s "http://127.0.0.1:$admin/metrics" | awk '/^hookwall_requests_total/ {s += $2} END {print s}'; }
  callgrind_control -z "$vpid" >/dev/null 2>&1
  before=$(total)
  "$loadgen" --url "http://127.0.0.1:$port/bench" --secret "$secret" --connections 4 \
    --duration "${seconds}s" --rate "$rate" --id-prefix "run_${name}_" >/dev/null
  after=$(total)
  callgrind_control -d "$vpid" >/dev/null 2>&1
  until [[ -s "$work/$name.$vpid.1" ]]; do sleep 0.2; done
  mv "$work/$name.$vpid.1" "$work/$name.out"
  kill "$vpid"
  python3 - "$work/$name.out" "$name" $((after - before)) <<'PY'
import re, subprocess, sys
out = subprocess.run(["callgrind_annotate", sys.argv[1]], capture_output=True, text=True).stdout
total = int(re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", out).group(1).replace(",", ""))
n = int(sys.argv[3])
print(f"{sys.argv[2]}: {n} requests, {total / n:,.0f} instructions a request")
PY
}

count this "$hookwall" "$telemetry"
count baseline "$baseline"
python3 - "$work/baseline.out" "$work/this.out" "$requests" <<'PY'
import re, subprocess, sys
def functions(path):
    out = subprocess.run(["callgrind_annotate", "--threshold=100", path],
                         capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*?)(\s+\[.*\])?$", line)
        if m:
            found[m.group(2)] = found.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return found
b, a, n = functions(sys.argv[1]), functions(sys.argv[2]), int(sys.argv[3])
print("\nmoved most (instructions a request: change, baseline, this):")
for k in sorted(set(a) | set(b), key=lambda k: -abs(a.get(k, 0) - b.get(k, 0)))[:25]:
    print(f"{(a.get(k, 0) - b.get(k, 0)) / n:+9.0f} {b.get(k, 0) / n:9.0f} {a.get(k, 0) / n:9.0f}  {k[:100]}")
PY
