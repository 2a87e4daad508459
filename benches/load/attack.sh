#!/usr/bin/env bash
# hookwall under attack by strangers, with the default limits. SENDERS connections each
# send an unsigned request head (fresh timestamp, bogus signature), then, by MODE:
#   stall    (600)  announce 1 MB, send ~960 KB of it, stall
#   head     (960)  announce 128 B to 1 MiB, send no body byte
#   trickle  (960)  announce 128 B to 1 MiB, send one body byte a second
#   fast-trickle (100)  announce 1 MB, send 900 KB at once, then one byte every 0.9 s
#                   (never a one-second stall; its average rate stays up for ~15 s)
#   verified (200)  not strangers: signed ~900 KB events (svix's own library signs), each
#                   in 4 pieces over 3 s, to a backend that holds each one HOLD seconds
#                   (40; 5 with --quick): what waits for its upstream must stay counted
# Meanwhile signed events arrive at RATE req/s. Reports hookwall's peak RSS (against the
# example pod's 128 MiB limit), the body bytes it held, what the signed traffic got, and
# how soon the strangers were answered 408 or closed (within 8 s is the target).
#
#   benches/load/attack.sh                     # release build, MODE=stall
#   MODE=trickle benches/load/attack.sh        # another attack
#   HOOKWALL=path/to/hookwall benches/load/attack.sh   # another build (e.g. an older one)
#   benches/load/attack.sh --quick             # debug build, every mode, a few seconds (CI)
#
# Env: MODE (stall), SENDERS (600 or 960), RATE (200), DURATION (10s).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/benches/load"
quick=0
[[ ${1:-} == --quick ]] && quick=1
if ((quick)) && [[ -z ${MODE:-} ]]; then
  for mode in stall head trickle fast-trickle verified; do MODE=$mode "$0" --quick; done
  exit 0
fi
mode=${MODE:-stall}
case $mode in
stall) senders=${SENDERS:-600} ;;
head | trickle) senders=${SENDERS:-960} ;;
fast-trickle) senders=${SENDERS:-100} ;;
verified) senders=${SENDERS:-200} ;;
*) echo "MODE is stall, head, trickle, fast-trickle or verified" >&2 && exit 1 ;;
esac
hold=${HOLD:-40}
((quick)) && hold=5
rate=${RATE:-200}
duration=${DURATION:-10s}
((quick)) && duration=3s

# shellcheck source=common.sh
source "$here/common.sh"
build "$quick"
read -r backend_port hw_port admin_port < <(free_ports 3)
if [[ $mode == verified ]]; then
  # A backend that reads each request whole, then holds it $hold s before its 200.
  python3 - "$backend_port" "$hold" >"$work/holding.log" 2>&1 <<'PY' &
import asyncio, sys
port, hold = int(sys.argv[1]), float(sys.argv[2])
async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            await asyncio.sleep(hold)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)
    await server.serve_forever()
asyncio.run(main())
PY
  pids+=($!)
else
  start_nginx backend nginx-backend.conf "$backend_port"
fi
start_hookwall "$hw_port" "$admin_port" "[[routes]]
name = \"bench\"
path = \"/bench\"
secrets = [\"$secret\"]
upstream = \"http://127.0.0.1:$backend_port/\"" hookwall "${HOOKWALL:-}"
wait_port "$backend_port"; wait_port "$hw_port"

echo "== $mode: $senders senders"
python3 - "$hw_port" "$senders" "$mode" "$secret" >"$work/attack.log" 2>&1 <<'PY' &
import asyncio, datetime, sys, time
port, senders, mode, secret = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
def head(length):
    return (
        "POST /bench HTTP/1.1\r\nhost: x\r\nsvix-id: msg_attack\r\n"
        f"svix-timestamp: {int(time.time())}\r\n"
        "svix-signature: v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n"
        f"content-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    ).encode()
chunk = b"x" * 65536
ended = []  # (seconds from the head to an answer or a close, what came back)
tried = []
async def stall(held):
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head(1000000))
        for _ in range(15):
            writer.write(chunk)
            await writer.drain()
        held.append(writer)
    except OSError:
        pass
async def head_or_trickle(i, held):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        tried.append(i)
        return
    held.append(writer)
    writer.write(head(128 + (i * 7919) % (2**20 - 128)))
    tried.append(i)
    start = time.monotonic()
    async def trickle():
        while True:
            await asyncio.sleep(1)
            writer.write(b"x")
            await writer.drain()
    dripping = asyncio.create_task(trickle()) if mode == "trickle" else None
    try:
        answer = await reader.read(12)
    except OSError:
        answer = b"reset"
    ended.append((time.monotonic() - start, answer[9:12] if answer.startswith(b"HTTP") else b"closed"))
    if dripping:
        dripping.cancel()
async def fast_then_trickle(held):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        start = time.monotonic()
        writer.write(head(1000000) + b"x" * 900000)
        await writer.drain()
        held.append(writer)
    except OSError:
        return
    async def trickle():
        while True:
            await asyncio.sleep(0.9)
            writer.write(b"x")
            await writer.drain()
    dripping = asyncio.create_task(trickle())
    try:
        answer = await reader.read(12)
    except OSError:
        answer = b"reset"
    ended.append((time.monotonic() - start, answer[9:12] if answer.startswith(b"HTTP") else b"closed"))
    dripping.cancel()
answers = {}
async def verified(i):
    from svix.webhooks import Webhook
    body = b'{"type":"user.created","data":"' + b"x" * 899960 + b'"}'
    msg_id = f"msg_verified_{i}_{int(time.time())}"
    signature = Webhook(secret).sign(msg_id, datetime.datetime.now(tz=datetime.timezone.utc), body.decode())
    now = int(time.time())
    request = (
        f"POST /bench HTTP/1.1\r\nhost: x\r\nsvix-id: {msg_id}\r\nsvix-timestamp: {now}\r\n"
        f"svix-signature: {signature}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    await asyncio.sleep(i * 3 / senders)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        async def write():
            writer.write(request)
            piece = len(body) // 4 + 1
            for at in range(0, len(body), piece):
                writer.write(body[at:at + piece])
                await writer.drain()
                await asyncio.sleep(0.02)
        writing = asyncio.create_task(write())
        answer = await reader.read(12)
        writing.cancel()
    except OSError:
        answer = b"reset"
    what = answer[9:12].decode() if answer.startswith(b"HTTP") else "closed"
    answers[what] = answers.get(what, 0) + 1
async def main():
    held = []
    if mode == "verified":
        tasks = [asyncio.create_task(verified(i)) for i in range(senders)]
        print(f"{senders} signed ~900 KB events on their way, each in 4 pieces, over 3 s; and stalled", flush=True)
        await asyncio.gather(*tasks)
        print(f"signed 900 KB events answered: {answers} (200: forwarded after the hold; 503: past the budget; 504: upstream_timeout, still forwarded)", flush=True)
    elif mode == "fast-trickle":
        tasks = [asyncio.create_task(fast_then_trickle(held)) for _ in range(senders)]
        for _ in range(200):
            if len(held) + len(ended) >= senders:
                break
            await asyncio.sleep(0.05)
        print(f"{len(held)} senders sent 900 KB at once, then trickle; and stalled", flush=True)
        await asyncio.sleep(10)
        within = sum(1 for t, _ in ended if t <= 3)
        kinds = {}
        for _, what in ended:
            kinds[what.decode()] = kinds.get(what.decode(), 0) + 1
        slowest = max((t for t, _ in ended), default=0)
        print(f"strangers answered or closed within 3 s: {within} of {senders} (slowest {slowest:.1f} s), within 8 s: {sum(1 for t, _ in ended if t <= 8)}; how: {kinds}", flush=True)
    elif mode == "stall":
        await asyncio.gather(*(stall(held) for _ in range(senders)))
        print(f"{len(held)} senders wrote their ~960 KB (into kernel buffers too) and stalled; {senders - len(held)} were cut off", flush=True)
    else:
        tasks = [asyncio.create_task(head_or_trickle(i, held)) for i in range(senders)]
        for _ in range(100):
            if len(tried) == senders:
                break
            await asyncio.sleep(0.05)
        print(f"{len(held)} senders sent their heads and stalled", flush=True)
        await asyncio.sleep(10)
        within = sum(1 for t, _ in ended if t <= 8)
        kinds = {}
        for _, what in ended:
            kinds[what.decode()] = kinds.get(what.decode(), 0) + 1
        print(f"strangers answered or closed within 8 s: {within} of {len(held)} ({100 * within / max(len(held), 1):.0f}%); how: {kinds}", flush=True)
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
if [[ $mode == head || $mode == trickle || $mode == fast-trickle ]]; then
  for _ in $(seq 200); do grep -q "within 8 s" "$work/attack.log" && break; sleep 0.1; done
  grep "within 8 s" "$work/attack.log" || true
fi
if [[ $mode == verified ]]; then
  for _ in $(seq $(((hold + 15) * 10))); do grep -q "events answered" "$work/attack.log" && break; sleep 0.1; done
  grep "events answered" "$work/attack.log" || true
fi
metrics=$(curl -s "127.0.0.1:$admin_port/metrics")
buffered=$(awk '/^hookwall_buffered_body_bytes / {print $2}' <<<"$metrics")
overloaded=$(awk '/^hookwall_requests_total\{outcome="overloaded",route="bench"\}/ {print $2}' <<<"$metrics")
forwarded=$(awk '/^hookwall_requests_total\{outcome="forwarded",route="bench"\}/ {print $2}' <<<"$metrics")
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$hw_pid/status")
python3 - "$out" "$rss_kb" "$buffered" "$overloaded" "$forwarded" "$senders" "$mode" <<'PY'
import json, sys
out, rss_kb, buffered, overloaded, forwarded, senders, mode = sys.argv[1:8]
r = json.loads(out) if out.startswith("{") else {}
print()
print(f"| attack | senders | hookwall peak RSS | body bytes held at the end | 503 overloaded on the route | signed: sent | signed: 2xx | signed: other statuses | signed p99 |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
other = r.get("unexpected", {})
sent = r.get("requests", 0)
ok = sent - sum(other.values()) - r.get("errors", 0)
print(f"| {mode} | {senders} | {int(rss_kb)/1024:.1f} MiB | {float(buffered or 0)/2**20:.1f} MiB | {float(overloaded or 0):.0f} | {sent} | {ok} | {other or '–'}, errors {r.get('errors', '?')} | {r.get('p99_us', 0)/1000:.1f} ms |")
limit = 128 * 1024
print(f"\npeak RSS {'under' if int(rss_kb) < limit else 'OVER'} the example pod's 128 MiB limit; {float(forwarded or 0):.0f} events forwarded in all")
sys.exit(0 if int(rss_kb) < limit else 1)
PY
