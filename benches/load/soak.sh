#!/usr/bin/env bash
# Soak: mixed traffic at a steady rate for a long time. Per 20 requests: 16 valid,
# 1 forged, 1 stale, 1 duplicate, 1 unwanted type; the backend fails 10% of deliveries and
# the load generator retries every valid event until it gets a 2xx, as Svix does.
# Samples hookwall's RSS, open fds and dedup gauge every 10 s, and at the end checks from
# the backend's log that every valid event was delivered with a 2xx exactly once and never
# again after it.
#
#   benches/load/soak.sh                 # 10 minutes at 2000 req/s (release build)
#   DURATION=20s RATE=500 benches/load/soak.sh --quick   # debug build, the CI smoke run
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/benches/load"
quick=0
[[ ${1:-} == --quick ]] && quick=1
duration=${DURATION:-10m}
rate=${RATE:-2000}
# shellcheck source=common.sh
source "$here/common.sh"
build "$quick"
read -r backend_port hw_port admin_port < <(free_ports 3)

start_nginx backend nginx-soak-backend.conf "$backend_port"
backend_pid=$!
start_hookwall "$hw_port" "$admin_port" "[[routes]]
name = \"soak\"
path = \"/soak\"
secrets = [\"$secret\"]
  [[routes.rules]]
  events = [\"user.*\"]
  upstream = \"http://127.0.0.1:$backend_port/\""
wait_port "$backend_port"
wait_port "$hw_port"

sample() {
  local rss fds ids
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$hw_pid/status")
  fds=$(ls "/proc/$hw_pid/fd" | wc -l)
  ids=$(curl -s "127.0.0.1:$admin_port/metrics" | awk '/^hookwall_dedup_entries / {print $2}')
  echo "$(date +%s) $rss $fds $ids" >>"$work/samples"
}
(while kill -0 "$hw_pid" 2>/dev/null; do sample; sleep 10; done) &
pids+=($!)

echo "== soak: $rate req/s for $duration ($hookwall)"
"$loadgen" --url "http://127.0.0.1:$hw_port/soak" --secret "$secret" \
  --connections 32 --rate "$rate" --duration "$duration" --mix soak --retry --id-prefix soak_ |
  tee "$work/result.json"
sample
kill -HUP "$backend_pid" # nginx reopens (flushes) its log
sleep 1.5

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
result = json.load(open(f"{work}/result.json"))
samples = [tuple(map(float, l.split())) for l in open(f"{work}/samples")]
seen = {}
for line in open(f"{work}/backend/ids.log"):
    id_, status = line.split()
    seen.setdefault(id_, []).append(int(status))
valid = {i: s for i, s in seen.items() if i.startswith("soak_")}
problems = []
for id_, statuses in valid.items():
    if statuses.count(200) != 1 or statuses[-1] != 200:
        problems.append((id_, statuses))
failed = sum(s.count(503) for s in valid.values())
rss = [s[1] / 1024 for s in samples]
fds = [int(s[2]) for s in samples]
ids = [int(float(s[3] or 0)) for s in samples]
half = len(samples) // 2
print(f"requests {result['requests']:,} at {result['rps']:,.0f}/s; retries {result['retries']:,}; lost {result['lost']}; "
      f"unexpected {result['unexpected']}")
print(f"backend: {len(valid):,} ids delivered, {failed:,} failed attempts (503) retried; ids not delivered exactly once: {len(problems)}")
print(f"RSS MB: first {rss[0]:.1f}, max {max(rss):.1f}, last {rss[-1]:.1f}; second half {min(rss[half:]):.1f}–{max(rss[half:]):.1f}")
print(f"open fds: first {fds[0]}, max {max(fds)}, last {fds[-1]}; dedup entries: max {max(ids):,}, last {ids[-1]:,}")
for id_, statuses in problems[:5]:
    print("  problem:", id_, statuses)
ok = result["lost"] == 0 and not problems and not result["unexpected"] and result["errors"] == 0
sys.exit(0 if ok else 1)
PY
