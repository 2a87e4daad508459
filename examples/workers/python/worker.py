"""A worker for the events hookwall queued on a Redis stream (a rule with `stream = "..."`).

hookwall has already verified the signature, checked the timestamp and dropped
duplicates; this reads the entries with a consumer group, does the slow part, and
acknowledges each one after its own work. Entries a dead worker left pending are
reclaimed (XAUTOCLAIM) once they have been idle for CLAIM_MIN_IDLE_MS.

    REDIS_URL=redis://127.0.0.1:6379 STREAM=clerk-events python3 worker.py

Env: REDIS_URL, STREAM (clerk-events), GROUP (workers), CONSUMER (host-pid),
CLAIM_MIN_IDLE_MS (60000), DRAIN=1 (exit once nothing is left, e.g. in a Job).
"""

import json
import os
import signal
import socket
import sys
import time

import redis

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
STREAM = os.environ.get("STREAM", "clerk-events")
GROUP = os.environ.get("GROUP", "workers")
CONSUMER = os.environ.get("CONSUMER", f"{socket.gethostname()}-{os.getpid()}")
CLAIM_MIN_IDLE_MS = int(os.environ.get("CLAIM_MIN_IDLE_MS", "60000"))
DRAIN = os.environ.get("DRAIN") == "1"

# Your database. The handlers are idempotent: an entry whose worker died after the work
# but before XACK is handled again by whoever reclaims it.
users = {}

HANDLERS = {
    "user.created": lambda data: users.__setitem__(data["id"], data),
    "user.updated": lambda data: users.__setitem__(data["id"], data),
    "user.deleted": lambda data: users.pop(data["id"], None),
}


def handle(entry_id, fields):
    """One entry: id, type, route, timestamp, body (the raw bytes the sender signed) and
    headers (JSON, for a worker that wants to verify the signature again)."""
    kind = fields[b"type"].decode()
    webhook_id = fields[b"id"].decode()
    handler = HANDLERS.get(kind)
    if handler is None:
        print(f"ignored {kind or '(no type)'} (webhook {webhook_id}, entry {entry_id})", flush=True)
        return
    data = json.loads(fields[b"body"])["data"]
    handler(data)
    print(f"handled {kind} {data['id']} (webhook {webhook_id}, entry {entry_id})", flush=True)


def process(r, entry_id, fields):
    """Handles and acknowledges; an entry whose handler raises stays pending and is
    reclaimed after CLAIM_MIN_IDLE_MS (by this worker or another)."""
    entry_id = entry_id.decode()
    try:
        handle(entry_id, fields)
        r.xack(STREAM, GROUP, entry_id)
    except Exception as err:  # noqa: BLE001 - any failure leaves the entry pending
        print(f"entry {entry_id} failed, left pending: {err}", file=sys.stderr, flush=True)


def reclaim(r):
    """Takes over entries other consumers read but never acknowledged."""
    start, claimed = "0-0", 0
    while True:
        reply = r.xautoclaim(STREAM, GROUP, CONSUMER, CLAIM_MIN_IDLE_MS, start_id=start, count=100)
        start, messages = reply[0], reply[1]
        for entry_id, fields in messages:
            if fields:
                claimed += 1
                process(r, entry_id, fields)
        if start in (b"0-0", "0-0"):
            return claimed


def main():
    r = redis.Redis.from_url(URL)
    try:
        r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except redis.ResponseError as err:
        if "BUSYGROUP" not in str(err):
            raise

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))

    last_reclaim = 0.0
    while not stopping:
        reclaimed = 0
        if (time.monotonic() - last_reclaim) * 1000 >= min(CLAIM_MIN_IDLE_MS, 30000):
            reclaimed = reclaim(r)
            last_reclaim = time.monotonic()
        reply = r.xreadgroup(GROUP, CONSUMER, {STREAM: ">"}, count=100, block=100 if DRAIN else 2000)
        messages = [m for _, entries in (reply or []) for m in entries]
        for entry_id, fields in messages:
            process(r, entry_id, fields)
        if DRAIN and not messages and not reclaimed:
            break
    r.close()


if __name__ == "__main__":
    main()
