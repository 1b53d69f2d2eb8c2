import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openTestStores } from '@meterd/core/testing';
import { newEventId } from '@meterd/core/ids';
import { RedisDeduper } from '../src/dedupe/redis.js';
import { compactRow, toRow } from '../src/rows.js';

/**
 * What one remembered idempotency key costs in Redis for the 35-day window, measured with
 * MEMORY USAGE (key, value, TTL and allocator overhead) on realistic keys. The figure goes into the
 * README; the bound fails the test if the stored format grows.
 */
test('Redis memory per deduplicated key', async (t) => {
  const stores = await openTestStores('dedupemem');
  try {
    const { workspace } = await stores.workspace('enterprise');
    const d = new RedisDeduper(stores.redis, { windowSeconds: 35 * 86_400, pendingTtlMs: 10_000, prefix: 'md' });
    const keys = Array.from({ length: 100 }, (_, i) => `checkout.completed:order_${1_000_000 + i}`);
    const claim = await d.claim({ workspaceId: workspace.id, limit: null, period: '202611', keys, token: 'P:test:1' });
    assert.ok(claim.states.every((s) => s === ''));
    const rows = keys.map((k, i) =>
      compactRow(
        toRow(
          {
            workspace_id: workspace.id,
            event_type: 'checkout.completed',
            idempotency_key: k.split(':')[1]!,
            quantity: 1,
            gmv_cents: 4299 + i,
            currency: 'USD',
            occurred_at_ms: Date.now(),
          },
          newEventId(),
          Date.now(),
        ),
      ),
    );
    await d.commit(workspace.id, keys, rows, 'P:test:1');
    let total = 0;
    for (const k of keys)
      total += Number(await stores.redis.call('MEMORY', 'USAGE', d.dedupeKey(workspace.id, k), 'SAMPLES', '0'));
    const perKey = total / keys.length;
    const ttl = await stores.redis.ttl(d.dedupeKey(workspace.id, keys[0]!));
    t.diagnostic(
      `redis bytes per deduplicated key: ${perKey.toFixed(0)} (key ${d.dedupeKey(workspace.id, keys[0]!).length} chars, value ${rows[0]!.length} chars)`,
    );
    t.diagnostic(`at 1M events/day over 35 days: ${((perKey * 35e6) / 2 ** 30).toFixed(1)} GiB`);
    assert.ok(ttl > 35 * 86_400 - 60, 'committed keys live for the dedupe window');
    assert.ok(perKey < 256, `${perKey} bytes per key`);
    for (const k of keys) await stores.redis.del(d.dedupeKey(workspace.id, k));
    await stores.redis.del(d.quotaKey(workspace.id, '202611'));
  } finally {
    await stores.close();
  }
});
