#!/usr/bin/env bash
# hookwall under the "stalled bodies" attack, with the default limits: SENDERS connections
# (600) each send an unsigned request head (fresh timestamp, bogus signature) announcing
# 1 MB, then ~960 KB of it, then stall. Meanwhile signed events arrive at RATE req/s.
# Reports hookwall's peak RSS (against the example pod's 128 MiB limit), the body bytes it
# buffered, and what the signed traffic got (statuses and latency).
#
#   benches/load/attack.sh           # release build
#   benches/load/attack.sh --quick   # debug build, a few seconds (CI smoke)
#
# Env: SENDERS (600), RATE (200), DURATION (10s).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/benches/load"
quick=0
[[ ${1:-} == --quick ]] && quick=1
senders=${SENDERS:-600}
rate=${RATE:-200}
duration=${DURATION:-10s}
((quick)) && duration=3s

# shellcheck source=common.sh
source "$here/common.sh"
build "$quick"
read -r backend_port hw_port admin_port < <(free_ports 3)
start_nginx backend nginx-backend.conf "$backend_port"
start_hookwall "$hw_port" "$admin_port" "[[routes]]
name = \"bench\"
path = \"/bench\"
secrets = [\"$secret\"]
upstream = \"http://127.0.0.1:$backend_port/\""
wait_port "$backend_port"; wait_port "$hw_port"

echo "== $senders senders: unsigned head announcing 1 MB, ~960 KB sent, then a stall"
python3 - "$hw_port" "$senders" >"$work/attack.log" 2>&1 <<'PY' &
import asyncio, sys, time
port, senders = int(sys.argv[1]), int(sys.argv[2])
head = (
    "POST /bench HTTP/1.1\r\nhost: x\r\nsvix-id: msg_attack\r\n"
    f"svix-timestamp: {int(time.time())}\r\n"
    "svix-signature: v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n"
    "content-type: application/json\r\ncontent-length: 1000000\r\n\r\n"
).encode()
chunk = b"x" * 65536
async def sender(held):
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        for _ in range(15):
            writer.write(chunk)
            await writer.drain()
        held.append(writer)
    except OSError:
        pass
async def main():
    held = []
    await asyncio.gather(*(sender(held) for _ in range(senders)))
    print(f"{len(held)} senders wrote their ~960 KB (into kernel buffers too) and stalled; {senders - len(held)} were cut off", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
PY
pids+=($!)
for _ in $(seq 600); do grep -q "and stalled" "$work/attack.log" && break; sleep 0.1; done
cat "$work/attack.log"

echo "== signed events at $rate req/s for $duration, during the attack"
out=$("$loadgen" --url "http://127.0.0.1:$hw_port/bench" --secret "$secret" --connections 8 \
  --duration "$duration" --rate "$rate" --id-prefix "attack_${RANDOM}_") || true
echo "$out"
metrics=$(curl -s "127.0.0.1:$admin_port/metrics")
buffered=$(awk '/^hookwall_buffered_body_bytes / {print $2}' <<<"$metrics")
overloaded=$(awk '/^hookwall_requests_total\{outcome="overloaded",route="bench"\}/ {print $2}' <<<"$metrics")
forwarded=$(awk '/^hookwall_requests_total\{outcome="forwarded",route="bench"\}/ {print $2}' <<<"$metrics")
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$hw_pid/status")
python3 - "$out" "$rss_kb" "$buffered" "$overloaded" "$forwarded" "$senders" <<'PY'
import json, sys
out, rss_kb, buffered, overloaded, forwarded, senders = sys.argv[1:7]
r = json.loads(out) if out.startswith("{") else {}
print()
print(f"| senders | hookwall peak RSS | body bytes buffered | 503 overloaded on the route | signed: sent | signed: 2xx | signed: other statuses | signed p99 |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
other = r.get("unexpected", {})
sent = r.get("requests", 0)
ok = sent - sum(other.values()) - r.get("errors", 0)
print(f"| {senders} | {int(rss_kb)/1024:.1f} MiB | {float(buffered)/2**20:.1f} MiB | {float(overloaded):.0f} | {sent} | {ok} | {other or '–'}, errors {r.get('errors', '?')} | {r.get('p99_us', 0)/1000:.1f} ms |")
limit = 128 * 1024
print(f"\npeak RSS {'under' if int(rss_kb) < limit else 'OVER'} the example pod's 128 MiB limit; {float(forwarded):.0f} events forwarded in all")
sys.exit(0 if int(rss_kb) < limit else 1)
PY
