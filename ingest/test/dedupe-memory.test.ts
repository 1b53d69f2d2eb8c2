import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { RedisDeduper } from '../src/dedupe/redis.js';
import { until, tempDir } from './helpers.js';
import { PrivateRedis } from './processes.js';
import { privateRedisPort } from './dedupe-ports.js';

/**
 * What the 35-day dedupe window costs per event held, as Redis's own `used_memory` grows (key
 * names, expiry entries, hash buckets and allocator size classes included; fragmentation is
 * not): 1 M distinct events go through the real claim and commit scripts on a Redis of the
 * test's own (defaults, so listpack limits are Redis's: 128 entries per hash). The hot rows
 * expire after a second here; what stays is what the window holds. The figure goes into the
 * README; the bound is the goal of docs/redis.md. The inserts are cut into four tests so that
 * each stays inside the per-test watchdog on a busy machine.
 */
const EVENTS = 1_000_000;
const PARTS = 4;
const PER_CALL = 1_000;
const WS = 'ws_0123456789abcdef0123456789';

let server: PrivateRedis;
let redis: Redis;
let d: RedisDeduper;
let before0 = 0;
const now = Date.now();

function usedMemory(info: string): number {
  return Number(/used_memory:(\d+)/.exec(info)![1]);
}

before(async () => {
  server = new PrivateRedis(tempDir('redis-mem'), await privateRedisPort(), false);
  await server.start();
  redis = new Redis(server.url);
  d = new RedisDeduper(redis, { windowSeconds: 35 * 86_400, pendingTtlMs: 10_000, hotSeconds: 1, prefix: 'md' });
  // What ingest's recovery does for a workspace new to this Redis (dedupe/recovery.ts).
  await d.markFresh(WS);
  before0 = usedMemory(await redis.info('memory'));
});

after(async () => {
  redis?.disconnect();
  await server?.kill();
});

const row = (i: number) =>
  `evt_${i.toString(16).padStart(32, '0')}|1|${4299 + (i % 1000)}|USD|${Math.floor(now / 1000)}|${Math.floor(now / 1000)}`;

for (let part = 0; part < PARTS; part++) {
  const from = (part * EVENTS) / PARTS;
  const to = ((part + 1) * EVENTS) / PARTS;
  test(`claims and commits events ${from} to ${to - 1}, all new`, async () => {
    // Four calls in flight keep Redis busy; each claims fresh keys, then commits them.
    let next = from;
    const lane = async () => {
      for (let c = next; c < to; c = next) {
        next += PER_CALL;
        const keys = Array.from({ length: PER_CALL }, (_, i) => `checkout.completed:order_${10_000_000 + c + i}`);
        const token = `P:mem:${c}`;
        const claim = await d.claim({ workspaceId: WS, limit: null, period: '202611', keys, token });
        assert.ok(
          claim.states.every((s) => s === ''),
          'every key is new',
        );
        await d.commit(
          WS,
          '202611',
          keys,
          keys.map((_, i) => row(c + i)),
          token,
        );
      }
    };
    await Promise.all([lane(), lane(), lane(), lane()]);
  });
}

test('Redis memory per event held for the dedupe window, over 1 M events', async (t) => {
  const withHot = usedMemory(await redis.info('memory'));
  // The hot rows' second has passed: a SCAN over them deletes each expired key it meets.
  await until(
    async () => {
      let cursor = '0';
      let live = 0;
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `md:{${WS}}:d:*`, 'COUNT', 10_000);
        live += keys.length;
        cursor = next;
      } while (cursor !== '0');
      return live;
    },
    (n) => n === 0,
    30_000,
    'the hot rows to expire',
  );
  const held = usedMemory(await redis.info('memory'));
  const perEvent = (held - before0) / EVENTS;
  // less the registry, marker, quota counter, slot meta and slot filter
  const buckets = (await redis.dbsize()) - 5;
  t.diagnostic(
    `redis used_memory per event held (35-day window): ${perEvent.toFixed(1)} bytes over ${EVENTS} events in ${buckets} buckets`,
  );
  t.diagnostic(
    `hot rows still held at the end of the inserts: ${((withHot - held) / EVENTS).toFixed(1)} bytes per event`,
  );
  t.diagnostic(`at 10k events/s for 35 days: ${((perEvent * 10_000 * 35 * 86_400) / 2 ** 30).toFixed(0)} GiB`);
  assert.ok(perEvent <= 40, `${perEvent} bytes per event held`);
  // Every key is still known, and answers with the hour its row is in.
  const probe = ['checkout.completed:order_10000000', `checkout.completed:order_${10_000_000 + EVENTS - 1}`];
  const again = await d.claim({ workspaceId: WS, limit: null, period: '202611', keys: probe, token: 'P:mem:again' });
  const hour = String(Math.floor(now / 3_600_000));
  assert.deepEqual(again.states, [`S:${hour}`, `S:${hour}`]);
  const [, sample] = await redis.scan('0', 'MATCH', `md:{${WS}}:h:*:*:*[0-9]`, 'COUNT', 1000);
  assert.equal(await redis.call('OBJECT', 'ENCODING', sample[0]!), 'listpack', 'buckets stay listpacks');
});
