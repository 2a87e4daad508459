// A worker for the events hookwall queued on a Redis stream (a rule with `stream = "..."`).
// hookwall has already verified the signature, checked the timestamp and dropped
// duplicates; this reads the entries with a consumer group, does the slow part, and
// acknowledges each one after its own work. Entries a dead worker left pending are
// reclaimed (XAUTOCLAIM) once they have been idle for CLAIM_MIN_IDLE_MS.
//
//   REDIS_URL=redis://127.0.0.1:6379 STREAM=clerk-events node worker.js
//
// Env: REDIS_URL, STREAM (clerk-events), GROUP (workers), CONSUMER (host-pid),
// CLAIM_MIN_IDLE_MS (60000), DRAIN=1 (exit once nothing is left, e.g. in a Job).
'use strict';

const os = require('node:os');
const { createClient } = require('redis');

const url = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const stream = process.env.STREAM || 'clerk-events';
const group = process.env.GROUP || 'workers';
const consumer = process.env.CONSUMER || `${os.hostname()}-${process.pid}`;
const claimMinIdleMs = Number(process.env.CLAIM_MIN_IDLE_MS || 60000);
const drain = process.env.DRAIN === '1';

// Your database. The handlers are idempotent: an entry whose worker died after the
// work but before XACK is handled again by whoever reclaims it.
const users = new Map();

const handlers = {
  'user.created': (data) => users.set(data.id, data),
  'user.updated': (data) => users.set(data.id, data),
  'user.deleted': (data) => users.delete(data.id),
};

// One entry: its fields are id, type, route, timestamp, body (the raw bytes the sender
// signed) and headers (JSON, for a worker that wants to verify the signature again).
async function handle(entryId, fields) {
  const event = JSON.parse(fields.body);
  const handler = handlers[fields.type];
  if (handler) {
    await handler(event.data);
    console.log(`handled ${fields.type} ${event.data.id} (webhook ${fields.id}, entry ${entryId})`);
  } else {
    console.log(`ignored ${fields.type || '(no type)'} (webhook ${fields.id}, entry ${entryId})`);
  }
}

// Handles and acknowledges; an entry whose handler throws stays pending and is
// reclaimed after CLAIM_MIN_IDLE_MS (by this worker or another).
async function process1(client, message) {
  try {
    await handle(message.id, message.message);
    await client.xAck(stream, group, message.id);
  } catch (err) {
    console.error(`entry ${message.id} failed, left pending: ${err.message}`);
  }
}

// Takes over entries other consumers read but never acknowledged.
async function reclaim(client) {
  let start = '0-0';
  let claimed = 0;
  do {
    const reply = await client.xAutoClaim(stream, group, consumer, claimMinIdleMs, start, { COUNT: 100 });
    for (const message of reply.messages) {
      if (message) {
        claimed += 1;
        await process1(client, message);
      }
    }
    start = reply.nextId;
  } while (start !== '0-0');
  return claimed;
}

async function main() {
  const client = createClient({ url });
  client.on('error', (err) => console.error(`redis: ${err.message}`));
  await client.connect();
  try {
    await client.xGroupCreate(stream, group, '0', { MKSTREAM: true });
  } catch (err) {
    if (!String(err.message).includes('BUSYGROUP')) throw err;
  }

  let stopping = false;
  process.on('SIGTERM', () => { stopping = true; });
  process.on('SIGINT', () => { stopping = true; });

  let lastReclaim = 0;
  while (!stopping) {
    let reclaimed = 0;
    if (Date.now() - lastReclaim >= Math.min(claimMinIdleMs, 30000)) {
      reclaimed = await reclaim(client);
      lastReclaim = Date.now();
    }
    const reply = await client.xReadGroup(group, consumer, { key: stream, id: '>' }, { COUNT: 100, BLOCK: drain ? 100 : 2000 });
    const messages = reply ? reply.flatMap((s) => s.messages) : [];
    for (const message of messages) {
      await process1(client, message);
    }
    if (drain && messages.length === 0 && reclaimed === 0) break;
  }
  await client.quit();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
