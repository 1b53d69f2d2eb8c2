import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { overallAsOf } from '../src/rollups/freshness.js';
import { Aggregator } from '../src/worker/aggregator.js';
import { PgTableLeases } from '../src/worker/leases.js';
import {
  COPY_HORIZON_S,
  insertEvents,
  referenceSnapshot,
  rng,
  rollupSnapshot,
  sleep,
  snapshotToObject,
  type Ev,
} from './helpers.js';

/**
 * The running aggregator keeps up with a stream of shipped batches: ingest's shipper pattern (an
 * insert every 250 ms, 5k events each, 50 workspaces) while the aggregator runs at its defaults
 * (16 shards, 200 ms poll), then the rollups must hold every event exactly and the as-of must pass
 * the last insert. Both are waited on as conditions with a generous deadline: nothing here is
 * timed, so a busy machine makes the test slower, never red. How fast rows reach the rollups is the
 * benchmark's to measure (bench/: rollup freshness p99); the lags seen here are only diagnostics.
 */
const SHARDS = 16;
const POLL_MS = 200;
const CLOSE_AFTER = 3600;
const BATCHES = 24;
const BATCH_EVENTS = 5_000;
const DEADLINE_MS = 120_000;
let stores: TestStores;
before(async () => {
  stores = await openTestStores('aggfresh');
});
after(async () => {
  await stores.close();
});

test('a running aggregator folds a stream of shipped batches into exact rollups, and its as-of passes the last one', async (t) => {
  const rand = rng(5);
  const agg = new Aggregator(stores.clickhouse, new PgTableLeases(stores.pool, { shards: SHARDS, ttlMs: 10_000 }), {
    shards: SHARDS,
    closeAfterSeconds: CLOSE_AFTER,
    copyHorizonSeconds: COPY_HORIZON_S,
    windowsPerQuery: 200,
  });
  agg.start(POLL_MS);
  const inserted: number[] = [];
  const lags: number[] = [];
  let watching = true;
  // Diagnostics only: how long each insert took to fall behind the rollups' as-of.
  const watcher = (async () => {
    while (watching) {
      const asOf = await overallAsOf(stores.clickhouse, SHARDS).catch(() => null); // diagnostics: a failed read measures nothing
      const now = Date.now();
      while (asOf !== null && lags.length < inserted.length && inserted[lags.length]! < asOf)
        lags.push(now - inserted[lags.length]!);
      await sleep(20);
    }
  })();
  const distinct: Ev[] = [];
  try {
    for (let b = 0, n = 0; b < BATCHES; b++) {
      const t0 = Date.now();
      const batch: Ev[] = [];
      for (let i = 0; i < BATCH_EVENTS; i++, n++) {
        batch.push({
          workspace_id: `ws_fresh${n % 50}`,
          event_type: 'checkout.completed',
          idempotency_key: `o${n}`,
          event_id: `e${n}`,
          quantity: 1 + (n % 3),
          gmv_cents: 4299,
          currency: 'USD',
          occurred_ms: Math.floor((t0 - rand() * 60_000) / 1000) * 1000,
          received_ms: Math.floor(t0 / 1000) * 1000,
        });
      }
      await insertEvents(stores.clickhouse, batch);
      inserted.push(Date.now());
      distinct.push(...batch);
      await sleep(Math.max(0, 250 - (Date.now() - t0)));
    }
    const want = snapshotToObject(referenceSnapshot(distinct, CLOSE_AFTER)).hour;
    const last = inserted[inserted.length - 1]!;
    let got: unknown;
    let asOf: number | null = null;
    const deadline = Date.now() + DEADLINE_MS;
    // A read that fails is retried until the deadline: on a loaded CI machine 18.16 has dropped a
    // connection right after the last big insert ("socket hang up"); the rollups are what is tested.
    let readError: unknown;
    for (;;) {
      try {
        asOf = await overallAsOf(stores.clickhouse, SHARDS);
        got = snapshotToObject(await rollupSnapshot(stores.clickhouse)).hour;
        readError = undefined;
        if (asOf !== null && asOf > last && JSON.stringify(got) === JSON.stringify(want)) break;
      } catch (err) {
        readError = err;
      }
      if (Date.now() > deadline) break;
      await sleep(100);
    }
    assert.equal(readError, undefined, 'the last read of the rollups succeeded');
    assert.deepEqual(got, want, 'every shipped event is in the hourly rollups, once');
    assert.ok(asOf !== null && asOf > last, `the rollups' as-of (${asOf}) passed the last insert (${last})`);
  } finally {
    watching = false;
    await watcher;
    await agg.stop();
  }
  lags.sort((a, b) => a - b);
  const pct = (p: number): number | undefined =>
    lags[Math.min(lags.length - 1, Math.ceil((p / 100) * lags.length) - 1)];
  t.diagnostic(
    `as-of lag over ${lags.length} of ${inserted.length} inserts (${BATCHES * BATCH_EVENTS} events): p50 ${pct(50)} ms, p99 ${pct(99)} ms (diagnostic, not asserted)`,
  );
});
