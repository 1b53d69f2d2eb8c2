import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { MeterCatalog, readMeterUsage, type MeterDefinition } from '@meterd/core/meters';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { Aggregator } from '../src/worker/aggregator.js';
import { PgTableLeases } from '../src/worker/leases.js';
import { COPY_HORIZON_S, catchUp, rng } from './helpers.js';
import { defineMeters, insertMetered, referenceUsage, sortUsage, type PropEv } from './meters-helpers.js';
import { SPECS } from './meters-property.js';

// Open meter hours are folded incrementally (meters/open.ts): after every cycle of a stream of
// batches in the current hour (duplicates inside a batch, replays of a batch at the same and at a
// later attempt, batches whose records the cycle sees late), every meter's open hour equals the
// distinct events' reference, and equals what a fresh aggregator (which folds the hour whole) writes.
let stores: TestStores;
before(async () => {
  stores = await openTestStores('metersopen');
});
after(async () => {
  await stores.close();
});

const SHARDS = 2;

function aggregator(): Aggregator {
  return new Aggregator(stores.clickhouse, new PgTableLeases(stores.pool, { shards: SHARDS, ttlMs: 10_000 }), {
    shards: SHARDS,
    closeAfterSeconds: 600,
    copyHorizonSeconds: COPY_HORIZON_S,
    windowsPerQuery: 7,
    meters: new MeterCatalog(stores.pool, { ttlMs: 0 }),
  });
}

async function usageOf(defs: Map<string, MeterDefinition[]>, hourMs: number): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const [bucket, meters] of defs)
    for (const m of meters)
      out[m.slug] = sortUsage(
        await readMeterUsage(stores.clickhouse, {
          meter: m,
          bucketId: bucket,
          closedOnly: false,
          window: 'hour',
          tz: 'UTC',
          fromMs: hourMs,
          toMs: hourMs + 3_600_000,
          groupBy: m.group_by,
          filter: {},
        }),
      );
  return out;
}

test('meters: open hours folded incrementally equal the distinct events and a whole fold, through replays', async () => {
  const rand = rng(7);
  const ws = 'ws_mopen';
  const defs = await defineMeters(stores.pool, [ws], SPECS);
  // Early in the current hour's span of the test, so the hour stays open (600 s close delay).
  const now = Date.now();
  const hourMs = Math.floor(now / 3_600_000) * 3_600_000;
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  let n = 0;
  const event = (): PropEv => {
    const k = n++;
    const p: Record<string, string> = { region: pick(['eu', 'us', 'ap']), model: pick(['gpt-4', 'claude', 'ünï 🧾']) };
    if (rand() < 0.8) p.tokens = pick([String(Math.floor(rand() * 2000) - 100), '999999999999999999', 'abc', '1.5']);
    if (rand() < 0.85) p.user = `u${Math.floor(rand() * 25)}`;
    return {
      workspace_id: ws,
      event_type: pick(['checkout.completed', 'api.call', 'refund.issued']),
      idempotency_key: `k${k}`,
      event_id: `e${k}`,
      quantity: Math.floor(rand() * 10) - 2,
      gmv_cents: Math.floor(rand() * 5000) - 500,
      currency: pick(['USD', 'EUR', 'JPY']),
      occurred_ms: Math.max(hourMs, now - Math.floor(rand() * 60_000)),
      received_ms: now,
      props: p,
    };
  };
  const agg = aggregator();
  const distinct: PropEv[] = [];
  const shipped: { id: string; rows: PropEv[]; attempt: number }[] = [];
  let incrementalCycles = 0;
  try {
    await catchUp(agg, SHARDS);
    for (let b = 0; b < 14; b++) {
      const fresh = Array.from({ length: 5 + Math.floor(rand() * 20) }, event);
      distinct.push(...fresh);
      // A duplicate inside the batch (another copy of a triple, the same properties).
      const rows = [...fresh, { ...fresh[0]!, event_id: `${fresh[0]!.event_id}_dup` }];
      const batch = { id: `batch${b}`, rows, attempt: 0 };
      shipped.push(batch);
      await insertMetered(stores.clickhouse, rows, defs, { id: batch.id, attempt: 0 });
      if (b % 4 === 3) {
        // A replay of an earlier batch: the same attempt again, or the next attempt.
        const old = pick(shipped);
        if (rand() < 0.5) old.attempt++;
        await insertMetered(stores.clickhouse, old.rows, defs, { id: old.id, attempt: old.attempt });
      }
      if (b % 3 !== 1) {
        await agg.runOnce();
        incrementalCycles++;
        assert.deepEqual(
          await usageOf(defs, hourMs),
          Object.fromEntries(
            defs.get(ws)!.map((m) => [
              m.slug,
              referenceUsage(m, distinct, {
                window: 'hour',
                tz: 'UTC',
                fromMs: hourMs,
                toMs: hourMs + 3_600_000,
                groupBy: m.group_by,
                filter: {},
              }),
            ]),
          ),
          `after batch ${b}`,
        );
      }
    }
  } finally {
    await agg.stop();
  }
  assert.ok(incrementalCycles >= 8);
  const incremental = await usageOf(defs, hourMs);
  // A fresh process folds the hour whole: the same rows. One more batch makes the hour new work.
  const extra = [event()];
  distinct.push(...extra);
  await insertMetered(stores.clickhouse, extra, defs, { id: 'batch_last', attempt: 0 });
  const fresh = aggregator();
  try {
    await catchUp(fresh, SHARDS);
    await fresh.runOnce();
  } finally {
    await fresh.stop();
  }
  const whole = await usageOf(defs, hourMs);
  assert.notDeepEqual(whole, incremental);
  for (const m of defs.get(ws)!)
    assert.deepEqual(
      whole[m.slug],
      referenceUsage(m, distinct, {
        window: 'hour',
        tz: 'UTC',
        fromMs: hourMs,
        toMs: hourMs + 3_600_000,
        groupBy: m.group_by,
        filter: {},
      }),
      m.slug,
    );
});
