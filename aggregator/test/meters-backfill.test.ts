import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { createClickHouse } from '@meterd/core/clickhouse';
import { meterBackfillErrorOf, readMeterUsage, type MeterDefinition } from '@meterd/core/meters';
import { createAggregatorMetrics } from '../src/metrics.js';
import { Aggregator } from '../src/worker/aggregator.js';
import { PgTableLeases } from '../src/worker/leases.js';
import { spawnAggregator, killHard, stopGracefully, type Child } from './child.js';
import { COPY_HORIZON_S, catchUp, insertEvents, randomStream, rng, sleep } from './helpers.js';
import { defineMeters, referenceUsage, sortUsage, type MeterSpec } from './meters-helpers.js';

const SHARDS = 4;
const CLOSE_AFTER = 600;
let stores: TestStores;
before(async () => {
  stores = await openTestStores('metersbackfill');
});
after(async () => {
  await stores?.close();
});

const SPECS: MeterSpec[] = [
  {
    slug: 'gmv',
    event_types: ['checkout.completed', 'refund.issued'],
    aggregation: 'sum',
    value_field: 'gmv_cents',
    group_by: [],
  },
  { slug: 'calls', event_types: ['api.call'], aggregation: 'count', value_field: null, group_by: [] },
  {
    slug: 'max-q',
    event_types: ['checkout.completed', 'api.call'],
    aggregation: 'max',
    value_field: 'quantity',
    group_by: [],
  },
  {
    slug: 'uniq-q',
    event_types: ['refund.issued', 'api.call'],
    aggregation: 'unique_count',
    value_field: 'quantity',
    group_by: [],
  },
];

interface Progress {
  state: string;
  from: Date | null;
  until: Date | null;
  done: Date | null;
}

async function progress(ids: string[]): Promise<Progress[]> {
  const { rows } = await stores.pool.query<Progress>(
    `SELECT backfill_state AS state, backfill_from AS "from", backfill_until AS until, backfill_done_before AS done
       FROM meters WHERE id = ANY($1::text[]) ORDER BY id`,
    [ids],
  );
  return rows;
}

async function waitFor(what: string, ok: () => Promise<boolean>, ms = 120_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

test('a meter created after its events arrived is backfilled exactly from the raw events, in chunks, resuming after kill -9 mid-backfill', async () => {
  const rand = rng(2020);
  const live = 'ws_bfill';
  const testBucket = 'ws_testbfill';
  const now = Date.now();
  // Events of the last 20 days in the live workspace and its test bucket (duplicates, replays,
  // forgotten retries, late arrivals), all before the meters exist.
  const { batches, distinct } = randomStream(rand, {
    workspaces: [live, testBucket],
    distinct: 300,
    base: now - 20 * 86_400_000,
    spanMs: 18 * 86_400_000,
    closeAfterSeconds: CLOSE_AFTER,
  });
  for (const b of batches) await insertEvents(stores.clickhouse, b);
  // The built-in rollups catch up first (no meters yet), so the windows the batches touched are
  // already past every watermark: only the backfill can give the meters their history.
  const agg = new Aggregator(stores.clickhouse, new PgTableLeases(stores.pool, { shards: SHARDS, ttlMs: 1_500 }), {
    shards: SHARDS,
    closeAfterSeconds: CLOSE_AFTER,
    copyHorizonSeconds: COPY_HORIZON_S,
    windowsPerQuery: 200,
  });
  await catchUp(agg, SHARDS);
  // Once more past the look-back (detect.ts): a new process re-reads the records of the last 10 s.
  await sleep(11_000);
  await agg.runOnce();
  await agg.stop();
  const defs = (await defineMeters(stores.pool, [live], SPECS)).get(live)!;
  await stores.pool.query(
    `INSERT INTO workspaces (id, slug, display_name, plan, environment, live_workspace_id) VALUES ($1, $2, 'Meters', 'growth', 'test', $3)`,
    [testBucket, 'ws-testbfill', live],
  );
  const ids = defs.map((m) => m.id);
  const env = {
    ...stores.env,
    AGGREGATOR_LEASE_TTL_MS: '1500',
    AGGREGATOR_SHARDS: String(SHARDS),
    AGGREGATOR_POLL_MS: '50',
    AGGREGATOR_CLOSE_AFTER_SECONDS: String(CLOSE_AFTER),
    AGGREGATOR_COPY_HORIZON_SECONDS: String(COPY_HORIZON_S),
    AGGREGATOR_METER_BACKFILL_HOURS: '168',
  };
  let child: Child = spawnAggregator(env);
  try {
    // Killed once every meter has made progress and none has finished: mid-backfill.
    await waitFor('backfill progress', async () =>
      (await progress(ids)).every((p) => p.state === 'running' && p.done !== null && p.done < p.until!),
    );
    await killHard(child);
    const mid = await progress(ids);
    assert.ok(
      mid.every((p) => p.state === 'running' && p.done! > p.from!),
      'killed before the backfill finished',
    );
    for (const p of mid) {
      assert.equal(p.until!.getTime() % 3_600_000, 0);
      assert.equal(
        p.until!.getTime() - p.from!.getTime(),
        35 * 86_400_000,
        'bounded: the 35 days before the creation hour',
      );
    }
    child = spawnAggregator(env);
    await waitFor('backfill done', async () => (await progress(ids)).every((p) => p.state === 'done'));
    const done = await progress(ids);
    assert.ok(done.every((p) => p.done!.getTime() === p.from!.getTime()));
    const q = { fromMs: now - 36 * 86_400_000, toMs: now, groupBy: [], filter: {}, tz: 'UTC' };
    for (const m of defs as MeterDefinition[]) {
      for (const bucket of [live, testBucket]) {
        for (const window of ['hour', 'day'] as const) {
          const got = await readMeterUsage(stores.clickhouse, {
            meter: m,
            bucketId: bucket,
            closedOnly: false,
            window,
            ...q,
          });
          const want = referenceUsage({ ...m, workspace_id: bucket }, distinct, { window, ...q });
          assert.ok(want.length > 0);
          assert.deepEqual(sortUsage(got), want, `meter ${m.slug}, bucket ${bucket}, ${window}`);
        }
      }
    }
  } finally {
    assert.equal(await stopGracefully(child), 0);
  }
});

test('a backfill ClickHouse refuses on every attempt stops in state failed for that meter (code, metric), the cycle goes on, and resumes from its chunk once fixed', async () => {
  const live = 'ws_bfail';
  const defs = (await defineMeters(stores.pool, [live], SPECS.slice(0, 2))).get(live)!;
  const ids = defs.map((m) => m.id);
  // The operator's server limit: 2,000 bytes of statement. The cycle's own statements fit in it;
  // a meter's backfill statement (24 hours of windows, the winners' subqueries) does not, and
  // never will until the limit or AGGREGATOR_METER_BACKFILL_HOURS changes: Code 62.
  const limited = createClickHouse({
    url: new URL(stores.env.CLICKHOUSE_URL!),
    database: stores.chDatabase,
    user: stores.env.CLICKHOUSE_USER ?? 'default',
    password: stores.env.CLICKHOUSE_PASSWORD ?? '',
    settings: { max_query_size: '2000' },
  });
  const metrics = createAggregatorMetrics();
  const opts = {
    shards: SHARDS,
    closeAfterSeconds: CLOSE_AFTER,
    copyHorizonSeconds: COPY_HORIZON_S,
    windowsPerQuery: 200,
    backfill: { db: stores.pool, hours: 24 },
  };
  const agg = new Aggregator(limited, new PgTableLeases(stores.pool, { shards: SHARDS, ttlMs: 60_000 }), opts, metrics);
  try {
    // Without the failed state, this cycle would throw, and so would every later one.
    await catchUp(agg, SHARDS);
    const { rows } = await stores.pool.query<{ id: string; state: string; error: string; done: Date; until: Date }>(
      `SELECT id, backfill_state AS state, backfill_error AS error, backfill_done_before AS done, backfill_until AS until
         FROM meters WHERE id = ANY($1::text[]) ORDER BY id`,
      [ids],
    );
    for (const r of rows) {
      assert.equal(r.state, 'failed', r.id);
      assert.equal(r.done.getTime(), r.until.getTime(), 'stopped at the chunk that failed, nothing skipped');
      const e = meterBackfillErrorOf(r.error)!;
      assert.equal(e.code, 'meter_backfill_refused');
      assert.match(e.message, /server code 62/);
    }
    assert.match(
      metrics.registry.render(),
      /aggregator_meter_backfills_failed_total\{code="meter_backfill_refused"\} 2/,
      'counted once per meter',
    );
    // A failed backfill is left alone: later cycles run, and touch it no more.
    await agg.runOnce();
    assert.match(
      metrics.registry.render(),
      /aggregator_meter_backfills_failed_total\{code="meter_backfill_refused"\} 2/,
    );
  } finally {
    await agg.stop();
    await limited.close();
  }
  // The operator lifts the limit and sets the state back: the backfill resumes and finishes.
  await stores.pool.query(`UPDATE meters SET backfill_state = 'running' WHERE id = ANY($1::text[])`, [ids]);
  const fixed = new Aggregator(stores.clickhouse, new PgTableLeases(stores.pool, { shards: SHARDS, ttlMs: 60_000 }), {
    ...opts,
    backfill: { db: stores.pool, hours: 24 * 35 },
  });
  try {
    await waitFor('backfill done after the fix', async () => {
      await fixed.runOnce();
      const { rows } = await stores.pool.query<{ state: string; error: string | null }>(
        'SELECT backfill_state AS state, backfill_error AS error FROM meters WHERE id = ANY($1::text[])',
        [ids],
      );
      return rows.every((r) => r.state === 'done' && r.error === null);
    });
  } finally {
    await fixed.stop();
  }
});
