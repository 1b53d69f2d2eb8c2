import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createClient } from '@clickhouse/client';
import { dateTimeLit, pinnedSettings } from '@meterd/core/clickhouse';
import { loadConfig, storeVars } from '@meterd/core/config';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { Aggregator } from '../src/worker/aggregator.js';
import { serverNow } from '../src/worker/detect.js';
import { PgTableLeases } from '../src/worker/leases.js';
import { reconcile } from '../src/reconcile/compare.js';
import {
  COPY_HORIZON_S,
  catchUp,
  insertEvents,
  referenceSnapshot,
  rollupSnapshot,
  snapshotToObject,
  sleep,
  type Ev,
} from './helpers.js';

// Open hours follow their new batches only; an hour is recomputed exactly once when it closes,
// which also corrects what the open tail could not know.
const SHARDS = 2;
let stores: TestStores;
before(async () => {
  stores = await openTestStores('aggincr');
});
after(async () => {
  await stores.close();
});

const ev = (o: Partial<Ev> & Pick<Ev, 'idempotency_key' | 'occurred_ms'>): Ev => ({
  workspace_id: 'ws_incr',
  event_type: 'api.call',
  event_id: `evt_${o.idempotency_key}`,
  quantity: 2,
  gmv_cents: 500,
  currency: 'USD',
  received_ms: o.occurred_ms,
  ...o,
});

test('an hour is recomputed exactly once when it closes, and the close corrects the open tail', async () => {
  const nowS = await serverNow(stores.clickhouse);
  const hourStart = Math.floor(nowS / 3600) * 3600 * 1000;
  const prev = hourStart - 3_600_000;
  // The previous hour closes 4 s from now: it is open for the first cycles, then closes.
  const closeAt = nowS + 4;
  const closeAfterSeconds = closeAt - hourStart / 1000;
  const agg = new Aggregator(stores.clickhouse, new PgTableLeases(stores.pool, { shards: SHARDS, ttlMs: 10_000 }), {
    shards: SHARDS,
    closeAfterSeconds,
    windowsPerQuery: 10,
    copyHorizonSeconds: COPY_HORIZON_S,
  });
  try {
    await catchUp(agg, SHARDS);
    const first = ev({ idempotency_key: 'o1', event_type: 'refund.issued', occurred_ms: prev - 3 * 86_400_000 });
    // A retry Redis forgot, stored in the open hour: the first copy (3 days earlier, within the
    // copy horizon) is the event.
    const retry = { ...first, event_id: 'evt_o1_retry', occurred_ms: prev + 60_000, received_ms: prev + 60_000 };
    const plain = ev({ idempotency_key: 'p1', occurred_ms: prev + 120_000 });
    await insertEvents(stores.clickhouse, [first]);
    await insertEvents(stores.clickhouse, [retry, plain]);
    const r1 = await agg.runOnce();
    assert.deepEqual([r1.windows, r1.closed], [2, 1], "the first copy's hour is recomputed, the open hour folded");
    const open = (await rollupSnapshot(stores.clickhouse)).hour;
    const prevKey = (et: string): string => `ws_incr ${et} USD ${new Date(prev).toISOString().replace('.000', '')}`;
    assert.equal(open.get(prevKey('api.call'))?.events, '1');
    // The open tail cannot see copies in other batches: the retry shows there until the close.
    assert.equal(open.get(prevKey('refund.issued'))?.events, '1');

    const deadline = Date.now() + 30_000;
    while ((await serverNow(stores.clickhouse)) < closeAt) {
      assert.ok(Date.now() < deadline, 'the server clock never reached the close time');
      await sleep(200);
    }
    const r2 = await agg.runOnce();
    assert.equal(r2.closed, 1, 'the hour is recomputed when it closes');
    const closed = (await rollupSnapshot(stores.clickhouse)).hour;
    assert.equal(closed.get(prevKey('refund.issued'))?.events, '0', 'the losing copy no longer counts');
    closed.delete(prevKey('refund.issued'));
    assert.deepEqual(
      snapshotToObject({ ...(await rollupSnapshot(stores.clickhouse)), hour: closed }).hour,
      snapshotToObject(referenceSnapshot([first, plain], closeAfterSeconds)).hour,
    );
    assert.deepEqual(
      await reconcile(stores.clickhouse, {
        workspaceId: 'ws_incr',
        from: 0,
        to: hourStart + 3_600_000,
        closeAfterSeconds,
        copyHorizonSeconds: COPY_HORIZON_S,
      }),
      [],
    );
    const r3 = await agg.runOnce();
    assert.equal(r3.closed, 0, 'a closed hour is not recomputed again without new rows');
    // Late rows touching the closed hour recompute it again.
    await insertEvents(stores.clickhouse, [ev({ idempotency_key: 'late1', occurred_ms: prev + 180_000 })]);
    const r4 = await agg.runOnce();
    assert.equal(r4.closed, 1);
    assert.equal((await rollupSnapshot(stores.clickhouse)).hour.get(prevKey('api.call'))?.events, '2');
  } finally {
    await agg.stop();
  }
});

test("a cycle reads the open hour's new batch, not the events already stored", async () => {
  const base = loadConfig(storeVars);
  // query_log records what each of the aggregator's queries read.
  const ch = createClient({
    url: base.CLICKHOUSE_URL.origin,
    compression: { request: false, response: false },
    database: stores.chDatabase,
    username: base.CLICKHOUSE_USER,
    password: base.CLICKHOUSE_PASSWORD,
    clickhouse_settings: { ...pinnedSettings('server-18'), log_queries: 1 },
  });
  const agg = new Aggregator(ch, new PgTableLeases(stores.pool, { shards: SHARDS, ttlMs: 10_000 }), {
    shards: SHARDS,
    closeAfterSeconds: 3600,
    copyHorizonSeconds: COPY_HORIZON_S,
    windowsPerQuery: 10,
  });
  try {
    await catchUp(agg, SHARDS);
    const nowS = await serverNow(ch);
    const hour = Math.floor(nowS / 3600) * 3600;
    // 300k events already in this open hour of the workspace (a fast server-side insert).
    await ch.command({
      query: `INSERT INTO events (workspace_id, event_type, idempotency_key, event_id, quantity, gmv_cents, currency, occurred_at, received_at)
        SELECT 'ws_cost', 'api.call', concat('h', toString(number)), concat('evt_h', toString(number)), 1, 1, 'USD',
          toDateTime(${dateTimeLit(hour * 1000)}, 'UTC') + (number % 60), toDateTime(${dateTimeLit(hour * 1000)}, 'UTC') + (number % 60)
        FROM system.numbers LIMIT 300000`,
    });
    const since = await serverNow(ch);
    await insertEvents(
      ch,
      Array.from({ length: 10 }, (_, i) =>
        ev({ workspace_id: 'ws_cost', idempotency_key: `n${i}`, occurred_ms: hour * 1000 + 1000 * i }),
      ),
    );
    const r = await agg.runOnce();
    assert.deepEqual([r.windows, r.closed], [1, 0]);
    await ch.command({ query: 'SYSTEM FLUSH LOGS' });
    const rs = await ch.query({
      query: `SELECT sum(read_rows) AS n, count() AS q FROM system.query_log
        WHERE type = 2 AND event_time >= toDateTime(${dateTimeLit(since * 1000)}, 'UTC') AND query LIKE '%ws_cost%' AND query NOT LIKE '%query_log%' AND query NOT LIKE '%system.numbers%'`,
      format: 'JSONEachRow',
    });
    const { n, q } = (await rs.json<{ n: string; q: string }>())[0]!;
    assert.ok(Number(q) >= 1, 'the fold ran');
    assert.ok(Number(n) < 10_000, `the cycle read ${n} rows for ws_cost, not the 300k stored`);
  } finally {
    await agg.stop();
    await ch.close();
  }
});

test('an hour that loses its winning copy to a late-shipped earlier copy is recomputed', async () => {
  const agg = new Aggregator(stores.clickhouse, new PgTableLeases(stores.pool, { shards: SHARDS, ttlMs: 10_000 }), {
    shards: SHARDS,
    closeAfterSeconds: 600,
    copyHorizonSeconds: COPY_HORIZON_S,
    windowsPerQuery: 10,
  });
  try {
    await catchUp(agg, SHARDS);
    const h1 = Date.UTC(2024, 4, 7, 10);
    const h2 = h1 + 3_600_000;
    // Copy A was received first (in h1) but sat in a backlogged thread; the retry B (Redis forgot
    // the key, no occurred_at) was received an hour later and shipped first: h2 closes counting B.
    const a = ev({ workspace_id: 'ws_lost', idempotency_key: 'order-9', occurred_ms: h1 + 60_000, gmv_cents: 700 });
    const b = { ...a, event_id: 'evt_order-9_retry', occurred_ms: h2 + 60_000, received_ms: h2 + 60_000 };
    const other = ev({ workspace_id: 'ws_lost', idempotency_key: 'other', occurred_ms: h2 + 120_000 });
    await insertEvents(stores.clickhouse, [b, other], { id: 'b-retry', attempt: 1 });
    await agg.runOnce();
    const h2Key = `ws_lost api.call USD ${new Date(h2).toISOString().replace('.000', '')}`;
    assert.equal((await rollupSnapshot(stores.clickhouse)).hour.get(h2Key)?.events, '2', 'B wins while A is unknown');
    await insertEvents(stores.clickhouse, [a], { id: 'b-backlogged', attempt: 1 });
    await agg.runOnce();
    const snap = await rollupSnapshot(stores.clickhouse);
    assert.equal(snap.hour.get(h2Key)?.events, '1', "h2 no longer counts B: A, shipped late, is the triple's winner");
    assert.equal(
      snap.day.get(`ws_lost api.call USD ${new Date(Date.UTC(2024, 4, 7)).toISOString().replace('.000', '')}`)
        ?.gmv_cents,
      '1200',
    );
    assert.deepEqual(
      await reconcile(stores.clickhouse, {
        workspaceId: 'ws_lost',
        from: 0,
        to: Date.UTC(2025, 0, 1),
        closeAfterSeconds: 600,
        copyHorizonSeconds: COPY_HORIZON_S,
      }),
      [],
    );
  } finally {
    await agg.stop();
  }
});
