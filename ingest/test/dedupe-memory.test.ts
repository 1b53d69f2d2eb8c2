import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { RedisDeduper } from '../src/dedupe/redis.js';
import { until, tempDir } from './helpers.js';
import { freePort, PrivateRedis } from './processes.js';

const EVENTS = 1_000_000;
const PER_CALL = 1_000;

function usedMemory(info: string): number {
  return Number(/used_memory:(\d+)/.exec(info)![1]);
}

/**
 * What the 35-day dedupe window costs per event held, as Redis's own `used_memory` grows (key
 * names, expiry entries, hash buckets and allocator size classes included; fragmentation is
 * not): 1 M distinct events go through the real claim and commit scripts on a Redis of the
 * test's own (defaults, so listpack limits are Redis's: 128 entries per hash). The hot rows
 * expire after a second here; what stays is what the window holds. The figure goes into the
 * README; the bound is the goal of docs/redis.md.
 */
test('Redis memory per event held for the dedupe window, over 1 M events', { timeout: 300_000 }, async (t) => {
  const server = new PrivateRedis(tempDir('redis-mem'), await freePort(), false);
  await server.start();
  const redis = new Redis(server.url);
  try {
    const d = new RedisDeduper(redis, {
      windowSeconds: 35 * 86_400,
      pendingTtlMs: 10_000,
      hotSeconds: 1,
      prefix: 'md',
    });
    const ws = 'ws_0123456789abcdef0123456789';
    await d.readEpoch();
    await d.markRecovered(ws, true, 3600);
    await d.markRecovered(ws, false, 3600);
    const before = usedMemory(await redis.info('memory'));
    const now = Date.now();
    const row = (i: number) =>
      `evt_${i.toString(16).padStart(32, '0')}|1|${4299 + (i % 1000)}|USD|${Math.floor(now / 1000)}|${Math.floor(now / 1000)}`;
    // Four calls in flight keep Redis busy; each claims fresh keys, then commits them.
    let next = 0;
    const lane = async () => {
      for (let c = next; c < EVENTS; c = next) {
        next += PER_CALL;
        const keys = Array.from({ length: PER_CALL }, (_, i) => `checkout.completed:order_${10_000_000 + c + i}`);
        const token = `P:mem:${c}`;
        const claim = await d.claim({ workspaceId: ws, limit: null, period: '202611', keys, token });
        assert.ok(
          claim.states.every((s) => s === ''),
          'every key is new',
        );
        await d.commit(
          ws,
          keys,
          keys.map((_, i) => row(c + i)),
          token,
        );
      }
    };
    await Promise.all([lane(), lane(), lane(), lane()]);
    const withHot = usedMemory(await redis.info('memory'));
    // The hot rows' second has passed: a SCAN over them deletes each expired key it meets.
    await until(
      async () => {
        let cursor = '0';
        let live = 0;
        do {
          const [next, keys] = await redis.scan(cursor, 'MATCH', `md:{${ws}}:d:*`, 'COUNT', 10_000);
          live += keys.length;
          cursor = next;
        } while (cursor !== '0');
        return live;
      },
      (n) => n === 0,
      30_000,
      'the hot rows to expire',
    );
    const after = usedMemory(await redis.info('memory'));
    const perEvent = (after - before) / EVENTS;
    const buckets = (await redis.dbsize()) - 4; // less the epoch, marker, quota and slot meta
    t.diagnostic(
      `redis used_memory per event held (35-day window): ${perEvent.toFixed(1)} bytes over ${EVENTS} events in ${buckets} buckets`,
    );
    t.diagnostic(
      `hot rows while within DEDUPE_HOT_SECONDS: ${((withHot - after) / EVENTS).toFixed(0)} bytes per event`,
    );
    t.diagnostic(`at 10k events/s for 35 days: ${((perEvent * 10_000 * 35 * 86_400) / 2 ** 30).toFixed(0)} GiB`);
    assert.ok(perEvent <= 40, `${perEvent} bytes per event held`);
    // Every retry is still known, and answers where its row is.
    const probe = ['checkout.completed:order_10000000', `checkout.completed:order_${10_000_000 + EVENTS - 1}`];
    const again = await d.claim({ workspaceId: ws, limit: null, period: '202611', keys: probe, token: 'P:mem:again' });
    const hour = String(Math.floor(now / 3_600_000));
    assert.deepEqual(again.states, [`S:${hour}`, `S:${hour}`]);
    const enc = await redis.call(
      'OBJECT',
      'ENCODING',
      (await redis.scan('0', 'MATCH', `md:{${ws}}:h:*:*:*`, 'COUNT', 1000))[1][0]!,
    );
    assert.equal(enc, 'listpack', 'buckets stay listpacks');
  } finally {
    redis.disconnect();
    await server.kill();
  }
});
