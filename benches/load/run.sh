#!/usr/bin/env bash
# Side-by-side load benchmark on loopback: the same signed 2.9 KB Clerk event, the same
# connection count, straight to an nginx backend ("direct"), through nginx as a plain
# reverse proxy verifying nothing ("nginx"), and through hookwall (verify + dedup + route
# + forward), alternating, ROUNDS times. Every request to hookwall has a unique id and a
# fresh signature; a run fails unless every reply was 2xx and hookwall's `forwarded`
# counter rose by exactly the number of requests sent.
#
#   benches/load/run.sh            # the full run (release build), prints a markdown report
#   benches/load/run.sh --quick    # a few seconds, debug build: the CI smoke run
#
# Env: ROUNDS (3), DURATION (10s), CONNECTIONS (64), PIN=1 to pin the load generator to
# CPU 1 and the servers to CPU 0 (taskset), EXPRESS=0 to leave out the "verify it
# yourself" row (Express + svix + undici, benches/load/express-svix/; not in --quick),
# BASELINE=path/to/an/older/hookwall to measure it too, in the same alternation (what a
# change on the request path cost, against the same nginx run), REDIS=1 to add a
# "redis" row (hookwall with store = "redis" on a redis-server of its own) and a "stream"
# row (a stream rule: every event appended to a Redis stream on another redis-server,
# trimmed to STREAM_MAX_LEN (200000) entries, and answered 200 queued); REDIS=ha adds to
# those a "sentinel" row (a primary, two replicas and three redis-sentinel processes;
# [redis] sentinels) and a "cluster" row (six cluster nodes, three primaries; [redis]
# cluster), in the same alternation, so each is read against the "redis" row (url).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/benches/load"
quick=0
[[ ${1:-} == --quick ]] && quick=1
rounds=${ROUNDS:-3}
duration=${DURATION:-10s}
connections=${CONNECTIONS:-64}
if ((quick)); then rounds=1; duration=2s; connections=8; fi

# shellcheck source=common.sh
source "$here/common.sh"
build "$quick"
read -r backend_port proxy_port hw_port admin_port express_port base_port base_admin redis_port rhw_port rhw_admin \
  stream_redis_port shw_port shw_admin sen_port sen_admin clu_port clu_admin < <(free_ports 17)
stream_max_len=${STREAM_MAX_LEN:-200000}
baseline=${BASELINE:-}
with_redis=${REDIS:-0}
ha=0
[[ $with_redis == ha ]] && ha=1 && with_redis=1
express=${EXPRESS:-1}
((quick)) && express=0

load_pin=()
if [[ ${PIN:-0} == 1 ]]; then server_pin=(taskset -c 0); load_pin=(taskset -c 1); fi

start_nginx backend nginx-backend.conf "$backend_port"
start_nginx proxy nginx-proxy.conf "$proxy_port" "127.0.0.1:$backend_port"
proxy_master=$!

start_hookwall "$hw_port" "$admin_port" "[[routes]]
name = \"bench\"
path = \"/bench\"
secrets = [\"$secret\"]
upstream = \"http://127.0.0.1:$backend_port/\""

wait_port "$backend_port"; wait_port "$proxy_port"; wait_port "$hw_port"
hw_main_pid=$hw_pid
if ((with_redis)); then
  command -v redis-server >/dev/null || {
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  }
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null &
  pids+=($!)
  wait_port "$redis_port"
  start_hookwall "$rhw_port" "$rhw_admin" "[dedup]
store = \"redis\"
[redis]
url = \"redis://127.0.0.1:$redis_port/0\"
[[routes]]
name = \"bench\"
path = \"/bench\"
secrets = [\"$secret\"]
upstream = \"http://127.0.0.1:$backend_port/\"" redis
  redis_hw_pid=$hw_pid
  mkdir -p "$work/stream-redis"
  redis-server --port "$stream_redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work/stream-redis" >/dev/null &
  pids+=($!)
  wait_port "$stream_redis_port"
  start_hookwall "$shw_port" "$shw_admin" "[redis]
url = \"redis://127.0.0.1:$stream_redis_port/0\"
stream_max_len = $stream_max_len
[[routes]]
name = \"bench\"
path = \"/bench\"
secrets = [\"$secret\"]
  [[routes.rules]]
  events = [\"*\"]
  stream = \"bench-events\"" stream
  stream_hw_pid=$hw_pid
  hw_pid=$hw_main_pid
  wait_port "$rhw_port"
  wait_port "$shw_port"
fi
if ((ha)); then
  # shellcheck source=redis_ha.sh
  source "$here/redis_ha.sh"
  start_sentinels
  start_cluster
  route="[[routes]]
name = \"bench\"
path = \"/bench\"
secrets = [\"$secret\"]
upstream = \"http://127.0.0.1:$backend_port/\""
  start_hookwall "$sen_port" "$sen_admin" "[dedup]
store = \"redis\"
[redis]
sentinels = $sentinel_list
master = \"mymaster\"
$route" sentinel
  sentinel_hw_pid=$hw_pid
  start_hookwall "$clu_port" "$clu_admin" "[dedup]
store = \"redis\"
[redis]
cluster = $cluster_list
$route" cluster
  cluster_hw_pid=$hw_pid
  hw_pid=$hw_main_pid
  wait_port "$sen_port"
  wait_port "$clu_port"
  # Until both have their Redis links up.
  for admin in $sen_admin $clu_admin; do
    for _ in $(seq 100); do
      curl -s "127.0.0.1:$admin/metrics" | grep -q '^hookwall_redis_up 1' && break
      sleep 0.1
    done
  done
fi
if [[ -n $baseline ]]; then
  start_hookwall "$base_port" "$base_admin" "[[routes]]
name = \"bench\"
path = \"/bench\"
secrets = [\"$secret\"]
upstream = \"http://127.0.0.1:$backend_port/\"" baseline "$baseline"
  base_pid=$hw_pid
  hw_pid=$hw_main_pid
  wait_port "$base_port"
fi

if ((express)); then
  npm ci --silent --no-audit --no-fund --prefix "$here/express-svix"
  PORT=$express_port SECRET=$secret UPSTREAM="http://127.0.0.1:$backend_port/" \
    "${server_pin[@]}" node "$here/express-svix/server.js" &
  express_pid=$!
  pids+=($express_pid)
  wait_port "$express_port"
fi

forwarded() { # admin-port [outcome]: how many requests ended so
  curl -s "127.0.0.1:${1:-$admin_port}/metrics" |
    awk -v o="${2:-forwarded}" '$1 == "hookwall_requests_total{outcome=\"" o "\",route=\"bench\"}" {print $2}'
}
cpu_ticks() { # utime + stime of the given pids, in clock ticks
  local total=0
  for pid in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done
  echo "$total"
}
nginx_proxy_pids() { pgrep -P "$proxy_master"; }
hz=$(getconf CLK_TCK)

results="$work/results.jsonl"
run() { # label url extra-args...
  local label=$1 url=$2; shift 2
  local before_fwd after_fwd before_cpu after_cpu cpu_pids=()
  case $label in
    hookwall*) cpu_pids=("$hw_pid") ;;
    baseline*) cpu_pids=("$base_pid") ;;
    redis*) cpu_pids=("$redis_hw_pid") ;;
    stream*) cpu_pids=("$stream_hw_pid") ;;
    sentinel*) cpu_pids=("$sentinel_hw_pid") ;;
    cluster*) cpu_pids=("$cluster_hw_pid") ;;
    express*) cpu_pids=("$express_pid") ;;
    nginx*) mapfile -t cpu_pids < <(nginx_proxy_pids) ;;
  esac
  local admin=$admin_port
  [[ $label == baseline* ]] && admin=$base_admin
  [[ $label == redis* ]] && admin=$rhw_admin
  [[ $label == sentinel* ]] && admin=$sen_admin
  [[ $label == cluster* ]] && admin=$clu_admin
  local outcome=forwarded
  [[ $label == stream* ]] && admin=$shw_admin && outcome=queued
  before_fwd=$(forwarded "$admin" "$outcome")
  ((${#cpu_pids[@]})) && before_cpu=$(cpu_ticks "${cpu_pids[@]}")
  local out
  out=$("${load_pin[@]}" "$loadgen" --url "$url" --secret "$secret" --connections "$connections" \
    --duration "$duration" --id-prefix "${label}_${RANDOM}_" "$@") || { echo "FAILED: $label: $out" >&2; exit 1; }
  local cpu_us=null
  if ((${#cpu_pids[@]})); then
    after_cpu=$(cpu_ticks "${cpu_pids[@]}")
    cpu_us=$(python3 -c "import json; r=json.loads('$out'); print(round(($after_cpu-$before_cpu)/$hz*1e6/max(r['requests'],1), 1))")
  fi
  if [[ $label == hookwall* || $label == baseline* || $label == redis* || $label == stream* ||
    $label == sentinel* || $label == cluster* ]]; then
    after_fwd=$(forwarded "$admin" "$outcome")
    local sent
    sent=$(python3 -c "import json; print(json.loads('$out')['requests'])")
    if [[ $((after_fwd - before_fwd)) != "$sent" ]]; then
      echo "FAILED: $label: hookwall $outcome $((after_fwd - before_fwd)) of $sent requests" >&2
      exit 1
    fi
  fi
  echo "{\"label\":\"$label\",\"cpu_us_per_request\":$cpu_us,${out:1}" | tee -a "$results"
}

echo "== saturation: $connections connections, $duration each, $rounds round(s), alternating"
for _ in $(seq "$rounds"); do
  run direct "http://127.0.0.1:$backend_port/bench"
  run nginx "http://127.0.0.1:$proxy_port/bench"
  run hookwall "http://127.0.0.1:$hw_port/bench"
  if [[ -n $baseline ]]; then run baseline "http://127.0.0.1:$base_port/bench"; fi
  if ((with_redis)); then run redis "http://127.0.0.1:$rhw_port/bench"; fi
  if ((ha)); then run sentinel "http://127.0.0.1:$sen_port/bench"; fi
  if ((ha)); then run cluster "http://127.0.0.1:$clu_port/bench"; fi
  if ((with_redis)); then run stream "http://127.0.0.1:$shw_port/bench"; fi
  if ((express)); then run express "http://127.0.0.1:$express_port/bench"; fi
done

rate=$(python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(int(statistics.median(r["rps"] for r in rows if r["label"] == "hookwall") / 2))
PY
)
echo "== fixed rate: $rate req/s (half of hookwall's median peak), $duration each, $rounds round(s), alternating"
for _ in $(seq "$rounds"); do
  run direct-rate "http://127.0.0.1:$backend_port/bench" --rate "$rate"
  run nginx-rate "http://127.0.0.1:$proxy_port/bench" --rate "$rate"
  run hookwall-rate "http://127.0.0.1:$hw_port/bench" --rate "$rate"
  if [[ -n $baseline ]]; then run baseline-rate "http://127.0.0.1:$base_port/bench" --rate "$rate"; fi
done
if ((with_redis)); then
  redis_rate=$(python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(int(statistics.median(r["rps"] for r in rows if r["label"] == "redis") / 2))
PY
  )
  echo "== fixed rate: $redis_rate req/s (half of store = \"redis\"'s median peak), $duration each, $rounds round(s), alternating"
  for _ in $(seq "$rounds"); do
    run direct-redis-rate "http://127.0.0.1:$backend_port/bench" --rate "$redis_rate"
    run redis-rate "http://127.0.0.1:$rhw_port/bench" --rate "$redis_rate"
    if ((ha)); then run sentinel-rate "http://127.0.0.1:$sen_port/bench" --rate "$redis_rate"; fi
    if ((ha)); then run cluster-rate "http://127.0.0.1:$clu_port/bench" --rate "$redis_rate"; fi
  done
fi

peak_rss_kb() { # the sum of the given pids' peak RSS (VmHWM), in kB
  local total=0
  for pid in "$@"; do total=$((total + $(awk '/VmHWM/ {print $2}' "/proc/$pid/status"))); done
  echo "$total"
}
rss_kb=$(peak_rss_kb "$hw_pid")
mapfile -t nginx_pids < <(nginx_proxy_pids)
nginx_rss_kb=$(peak_rss_kb "$proxy_master" "${nginx_pids[@]}")
express_rss_kb=0
if ((express)); then express_rss_kb=$(peak_rss_kb "$express_pid"); fi
ids=$(curl -s "127.0.0.1:$admin_port/metrics" | awk '/^hookwall_dedup_entries / {print $2}')
fds=$(ls "/proc/$hw_pid/fd" | wc -l)

python3 - "$results" "$rss_kb" "$ids" "$fds" "$(nproc)" "$nginx_rss_kb" "$express_rss_kb" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rss_kb, ids, fds, cores, nginx_rss_kb, express_rss_kb = sys.argv[2:8]
def stat(label, key):
    vals = [r[key] for r in rows if r["label"] == label and r[key] is not None]
    if not vals: return "–"
    med = statistics.median(vals)
    return f"{med:,.0f}" if len(vals) == 1 else f"{med:,.0f} ({min(vals):,.0f}–{max(vals):,.0f})"
print()
print("| stack | req/s median (range) | p50 µs | p99 µs | p99.9 µs | proxy CPU µs/request |")
print("| --- | --- | --- | --- | --- | --- |")
for label in ["direct", "nginx", "hookwall", "baseline", "redis", "sentinel", "cluster", "stream", "express"]:
    if not any(r["label"] == label for r in rows): continue
    print(f"| {label} | {stat(label,'rps')} | {stat(label,'p50_us')} | {stat(label,'p99_us')} | {stat(label,'p999_us')} | {stat(label,'cpu_us_per_request')} |")
med = lambda l, k: statistics.median(r[k] for r in rows if r["label"] == l)
print(f"\nhookwall / nginx throughput: {med('hookwall','rps')/med('nginx','rps'):.2f}x; p99 {med('hookwall','p99_us'):,.0f} µs vs {med('nginx','p99_us'):,.0f} µs")
if any(r["label"] == "baseline" for r in rows):
    print(f"baseline (BASELINE=...) / nginx throughput: {med('baseline','rps')/med('nginx','rps'):.2f}x; hookwall / baseline: {med('hookwall','rps')/med('baseline','rps'):.3f}x; CPU per request {med('hookwall','cpu_us_per_request'):.1f} vs {med('baseline','cpu_us_per_request'):.1f} µs")
if any(r["label"] == "redis" for r in rows):
    print(f"store = redis / store = memory throughput: {med('redis','rps')/med('hookwall','rps'):.2f}x")
for mode in ["sentinel", "cluster"]:
    if any(r["label"] == mode for r in rows):
        print(f"{mode} / url (redis row) throughput: {med(mode,'rps')/med('redis','rps'):.3f}x; p99 {med(mode,'p99_us'):,.0f} µs vs {med('redis','p99_us'):,.0f} µs")
if any(r["label"] == "stream" for r in rows):
    print(f"stream rule / forward throughput: {med('stream','rps')/med('hookwall','rps'):.2f}x; p99 {med('stream','p99_us'):,.0f} µs")
if any(r["label"] == "express" for r in rows):
    print(f"hookwall / Express + svix throughput: {med('hookwall','rps')/med('express','rps'):.1f}x")
print()
print("| at a fixed rate | req/s | p50 µs | p99 µs | p99.9 µs | median p99 added over direct |")
print("| --- | --- | --- | --- | --- | --- |")
for label in ["direct-rate", "nginx-rate", "hookwall-rate", "baseline-rate", "direct-redis-rate", "redis-rate", "sentinel-rate", "cluster-rate"]:
    if not any(r["label"] == label for r in rows): continue
    # store = "redis" runs at half of its own peak, against direct at that same rate.
    direct = "direct-redis-rate" if any(m in label for m in ("redis", "sentinel", "cluster")) else "direct-rate"
    added = med(label, "p99_us") - med(direct, "p99_us")
    print(f"| {label[:-5]} | {stat(label,'rps')} | {stat(label,'p50_us')} | {stat(label,'p99_us')} | {stat(label,'p999_us')} | {added:,.0f} µs |")
print(f"\nhookwall peak RSS {int(rss_kb)/1024:.1f} MB with {int(float(ids)):,} ids remembered; {fds} open fds at the end; {cores} cores")
express_rss = f", Express + svix {int(express_rss_kb)/1024:.1f} MB" if int(express_rss_kb) else ""
print(f"peak RSS of the other proxies: nginx {int(nginx_rss_kb)/1024:.1f} MB (master and workers){express_rss}")
PY
if ((with_redis)); then
  keys=$(redis-cli -p "$redis_port" dbsize)
  used=$(redis-cli -p "$redis_port" info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r')
  echo "Redis (store = \"redis\" row): $keys keys, used_memory $((used / 1024 / 1024)) MiB, about $((used / (keys > 0 ? keys : 1))) bytes per delivered id"
  entries=$(redis-cli -p "$stream_redis_port" xlen bench-events)
  stream_bytes=$(redis-cli -p "$stream_redis_port" memory usage bench-events samples 0)
  echo "Redis (stream row): $entries entries in bench-events (trimmed to about $stream_max_len), $((stream_bytes / 1024 / 1024)) MiB, about $((stream_bytes / (entries > 0 ? entries : 1))) bytes per queued 2.9 KB event"
fi
