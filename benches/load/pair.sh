#!/usr/bin/env bash
# Paired A/B of two hookwall builds: this one and BASELINE (an older binary), each forwarding
# the same signed 2.9 KB event to the nginx backend over 64 connections, alternating (ABBA)
# ROUNDS times. Only the two rows, so each pair runs seconds apart: on a noisy machine
# that is what tells a change's cost from the machine's drift (run.sh's full rounds put
# a minute of other rows between them). Prints each round and the medians.
#
#   BASELINE=path/to/older/hookwall benches/load/pair.sh      # release build
#   BASELINE=self benches/load/pair.sh --quick                 # CI smoke: debug, this build twice
#   STRIPE=1 BASELINE=... benches/load/pair.sh                 # also this build's Stripe route,
#                                                              # the same event signed as Stripe does
#   GITHUB=1 BASELINE=... benches/load/pair.sh                 # also this build's GitHub route
#                                                              # (dedup on the body's digest)
#   TRACING=1 BASELINE=... benches/load/pair.sh                # this build exports a trace of
#                                                              # every request (sample_ratio 1.0)
#                                                              # to a local OTLP receiver
#
# Env: ROUNDS (10), DURATION (8s), CONNECTIONS (64), STRIPE (0), GITHUB (0), TRACING (0).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/benches/load"
baseline=${BASELINE:?BASELINE=path/to/an/older/hookwall}
rounds=${ROUNDS:-10}
duration=${DURATION:-8s}
connections=${CONNECTIONS:-64}
quick=0
if [[ ${1:-} == --quick ]]; then quick=1; rounds=2; duration=1s; connections=8; fi

# shellcheck source=common.sh
source "$here/common.sh"
build "$quick"
[[ $baseline == self ]] && baseline=$hookwall
read -r backend_port a_port a_admin b_port b_admin < <(free_ports 5)
start_nginx backend nginx-backend.conf "$backend_port"
route="[[routes]]
name = \"bench\"
path = \"/bench\"
secrets = [\"$secret\"]
upstream = \"http://127.0.0.1:$backend_port/\""
stripe=${STRIPE:-0}
stripe_route="
[[routes]]
name = \"stripe\"
path = \"/stripe\"
provider = \"stripe\"
secrets = [\"$secret\"]
upstream = \"http://127.0.0.1:$backend_port/\""
github=${GITHUB:-0}
github_route="
[[routes]]
name = \"github\"
path = \"/github\"
provider = \"github\"
secrets = [\"$secret\"]
upstream = \"http://127.0.0.1:$backend_port/\""
routes=$route
((stripe)) && routes+=$stripe_route
((github)) && routes+=$github_route
if ((${TRACING:-0})); then
  read -r otlp_port < <(free_ports 1)
  start_collector "$otlp_port"
  routes="[telemetry]
otlp_endpoint = \"http://127.0.0.1:$otlp_port\"
sample_ratio = 1.0
$routes"
fi
start_hookwall "$a_port" "$a_admin" "$routes"
a_pid=$hw_pid
start_hookwall "$b_port" "$b_admin" "$route" baseline "$baseline"
b_pid=$hw_pid
wait_port "$backend_port"; wait_port "$a_port"; wait_port "$b_port"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
one() { # port pid [path provider]: "req/s CPU-µs-per-request"
  local before out
  before=$(cpu_ticks "$2")
  out=$("$loadgen" --url "http://127.0.0.1:$1${3:-/bench}" --secret "$secret" --provider "${4:-svix}" \
    --connections "$connections" --duration "$duration" --id-prefix "pair_${RANDOM}_")
  python3 -c "import json, sys; r = json.loads(sys.argv[1]); \
print(r['rps'], round(($(cpu_ticks "$2") - $before) / $(getconf CLK_TCK) * 1e6 / r['requests'], 1))" "$out"
}
results="$work/pairs"
for i in $(seq "$rounds"); do
  if ((i % 2)); then a=$(one "$a_port" "$a_pid"); b=$(one "$b_port" "$b_pid")
  else b=$(one "$b_port" "$b_pid"); a=$(one "$a_port" "$a_pid"); fi
  echo "round $i: this $a | baseline $b" | tee -a "$results"
  if ((stripe)); then echo "round $i: stripe $(one "$a_port" "$a_pid" /stripe stripe)" | tee -a "$work/stripe"; fi
  if ((github)); then echo "round $i: github $(one "$a_port" "$a_pid" /github github)" | tee -a "$work/github"; fi
done
for provider in stripe github; do
  [[ -f $work/$provider ]] || continue
  python3 - "$work/$provider" "$provider" <<'PY'
import re, statistics, sys
rows = [list(map(float, re.findall(r"[\d.]+", l)[1:])) for l in open(sys.argv[1])]
print(f"this build's {sys.argv[2]} route: median req/s {statistics.median(r[0] for r in rows):,.0f}, "
      f"CPU per request {statistics.median(r[1] for r in rows):.1f} µs")
PY
done
python3 - "$results" <<'PY'
import re, statistics, sys
rows = [list(map(float, re.findall(r"[\d.]+", l)[1:])) for l in open(sys.argv[1])]
ratio = [a / b for a, _, b, _ in rows]
med = lambda i: statistics.median(r[i] for r in rows)
print(f"this / baseline, per round: {', '.join(f'{x:.3f}' for x in ratio)}")
print(f"median of the rounds' ratios {statistics.median(ratio):.3f}; req/s {med(0):,.0f} vs {med(2):,.0f}; "
      f"CPU per request {med(1):.1f} vs {med(3):.1f} µs")
PY
if ((${TRACING:-0})); then
  # How many of this build's spans the exporter could not queue or send.
  python3 - "$a_admin" <<'PY'
import re, sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics").read().decode()
def total(name, labels=""):
    return sum(float(v) for v in re.findall(rf"^{name}{labels}\S* (\S+)$", text, re.M))
spans = 2 * total("hookwall_requests_total", r'\{[^}]*outcome="forwarded"')
dropped = total("hookwall_trace_spans_dropped_total")
print(f"traces: {dropped:,.0f} of {spans:,.0f} spans dropped (a SERVER and a CLIENT span a request)")
PY
fi
