import assert from 'node:assert/strict';
import type { ClickHouseClient } from '@clickhouse/client';
import { MeterCatalog, readMeterUsage, type MeterDefinition, type MeterWindow } from '@meterd/core/meters';
import type { Pool } from '@meterd/core/store';
import { Aggregator } from '../src/worker/aggregator.js';
import { PgTableLeases } from '../src/worker/leases.js';
import { COPY_HORIZON_S, catchUp, randomStream, rng } from './helpers.js';
import {
  defineMeters,
  insertMetered,
  referenceUsage,
  sortUsage,
  type MeterSpec,
  type PropEv,
} from './meters-helpers.js';

const SHARDS = 2;
const CLOSE_AFTER = 600;

/** Every aggregation, over quantity, gmv_cents (several currencies) and properties, with and without group-by. */
export const SPECS: MeterSpec[] = [
  {
    slug: 'sum-q',
    event_types: ['checkout.completed', 'api.call'],
    aggregation: 'sum',
    value_field: 'quantity',
    group_by: ['region'],
  },
  {
    slug: 'sum-gmv',
    event_types: ['checkout.completed', 'refund.issued'],
    aggregation: 'sum',
    value_field: 'gmv_cents',
    group_by: [],
  },
  {
    slug: 'count',
    event_types: ['api.call', 'refund.issued'],
    aggregation: 'count',
    value_field: null,
    group_by: ['region', 'model'],
  },
  {
    slug: 'sum-tokens',
    event_types: ['api.call'],
    aggregation: 'sum',
    value_field: 'properties.tokens',
    group_by: ['region', 'model'],
  },
  {
    slug: 'max-tokens',
    event_types: ['api.call', 'checkout.completed'],
    aggregation: 'max',
    value_field: 'properties.tokens',
    group_by: ['model'],
  },
  {
    slug: 'latest-tokens',
    event_types: ['api.call'],
    aggregation: 'latest',
    value_field: 'properties.tokens',
    group_by: [],
  },
  {
    slug: 'latest-q',
    event_types: ['checkout.completed'],
    aggregation: 'latest',
    value_field: 'quantity',
    group_by: ['region'],
  },
  {
    slug: 'uniq-user',
    event_types: ['api.call', 'checkout.completed'],
    aggregation: 'unique_count',
    value_field: 'properties.user',
    group_by: ['region'],
  },
  {
    slug: 'uniq-q',
    event_types: ['refund.issued'],
    aggregation: 'unique_count',
    value_field: 'quantity',
    group_by: [],
  },
];

function props(rand: () => number): Record<string, string> {
  const p: Record<string, string> = {};
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const region = pick(['eu', 'us', 'ap', undefined]);
  if (region !== undefined) p.region = region;
  if (rand() < 0.8) p.model = pick(['gpt-4', 'claude', 'ünï 🧾']);
  const r = rand();
  // Integers (some of 18 digits: sums pass 2^53 and Int64 would show a double), and values that
  // must be skipped, never billed: fractions, signs, words, empty.
  if (r < 0.6) p.tokens = String(Math.floor(rand() * 2000) - 100);
  else if (r < 0.7) p.tokens = pick(['999999999999999999', '-999999999999999999', '000123']);
  else if (r < 0.85) p.tokens = pick(['1.5', '+3', 'abc', '', '1e3', ' 7', '9999999999999999999']);
  if (rand() < 0.85) p.user = `u${Math.floor(rand() * 25)}`;
  return p;
}

/**
 * The meters' property, shared by the 18.16 and chDB runs: after random insert batches (duplicates
 * inside a batch, replayed batches, retries Redis forgot stored in other hours with other
 * properties, late events that close hours again) and aggregator cycles, readMeterUsage of every
 * meter equals a reference computed from the distinct events, for hour, day and month windows, in
 * UTC and Europe/Paris, with the full group-by, a subset, none, and a filter.
 */
export async function checkMeterProperty(ch: ClickHouseClient, pool: Pool, seed: number): Promise<void> {
  const rand = rng(seed);
  const workspaces = [`ws_mp${seed}a`, `ws_mp${seed}b`];
  const base = Date.UTC(2024, 0, 28, 22);
  const stream = randomStream(rand, {
    workspaces,
    distinct: 160,
    base,
    spanMs: 4 * 86_400_000,
    closeAfterSeconds: CLOSE_AFTER,
  });
  const propsOf = new Map<string, Record<string, string>>();
  const tripleOf = (e: PropEv): string => `${e.workspace_id}|${e.event_type}|${e.idempotency_key}`;
  const distinct: PropEv[] = stream.distinct.map((e) => {
    const p = props(rand);
    propsOf.set(tripleOf(e), p);
    return { ...e, props: p };
  });
  // A losing copy carries other properties: it must never be the one counted.
  const batches: PropEv[][] = stream.batches.map((b) =>
    b.map((e) => ({
      ...e,
      props:
        e.event_id.endsWith('_retry') || e.event_id.endsWith('_forgotten')
          ? { region: 'loser', tokens: '1000000', user: 'loser', model: 'loser' }
          : propsOf.get(tripleOf(e))!,
    })),
  );
  // Meters on the first workspace only: the second's events must never reach them.
  const defs = await defineMeters(pool, workspaces.slice(0, 1), SPECS);
  const agg = new Aggregator(ch, new PgTableLeases(pool, { shards: SHARDS, ttlMs: 10_000 }), {
    shards: SHARDS,
    closeAfterSeconds: CLOSE_AFTER,
    copyHorizonSeconds: COPY_HORIZON_S,
    windowsPerQuery: 7,
    meters: new MeterCatalog(pool, { ttlMs: 0 }),
  });
  try {
    await catchUp(agg, SHARDS);
    const seen = new Set<string>();
    for (const b of batches) {
      await insertMetered(ch, b, defs);
      for (const e of b) seen.add(tripleOf(e));
      if (rand() < 0.1) {
        await agg.runOnce();
        await assertUsage(
          ch,
          defs,
          distinct.filter((e) => seen.has(tripleOf(e))),
          rand,
          `seed ${seed}, mid-stream`,
        );
      }
    }
    await agg.runOnce();
    await assertUsage(ch, defs, distinct, rand, `seed ${seed}`, true);
  } finally {
    await agg.stop();
  }
}

async function assertUsage(
  ch: ClickHouseClient,
  defs: Map<string, MeterDefinition[]>,
  distinct: readonly PropEv[],
  rand: () => number,
  label: string,
  all = false,
): Promise<void> {
  const fromMs = Date.UTC(2024, 0, 27);
  const toMs = Date.UTC(2024, 1, 4);
  for (const [bucket, meters] of defs) {
    for (const m of meters) {
      const windows: MeterWindow[] = all
        ? ['hour', 'day', 'month']
        : [(['hour', 'day', 'month'] as const)[Math.floor(rand() * 3)]!];
      for (const window of windows) {
        for (const tz of all && window === 'day' ? ['UTC', 'Europe/Paris'] : ['UTC']) {
          const groupings: string[][] = [m.group_by, m.group_by.slice(1), []];
          for (const groupBy of groupings) {
            const filter: Record<string, string> =
              m.group_by.includes('region') && groupBy.length === 0 ? { region: 'eu' } : {};
            const q = { window, tz, fromMs, toMs, groupBy, filter };
            const got = await readMeterUsage(ch, { meter: m, bucketId: bucket, closedOnly: false, ...q });
            const want = referenceUsage(m, distinct, q);
            assert.deepEqual(
              sortUsage(got),
              want,
              `${label}: meter ${m.slug} of ${bucket}, ${window} in ${tz}, group_by [${groupBy.join(',')}] filter ${JSON.stringify(filter)}`,
            );
          }
        }
      }
    }
  }
}
