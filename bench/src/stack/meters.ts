import { newId } from '@meterd/core/ids';
import { METER_COLUMNS, METER_LIMITS, meterFromRow, type MeterDefinition } from '@meterd/core/meters';
import type { Pool } from '@meterd/core/store';

/**
 * `--meters N`: meters defined on the bench workspace (issue 20's acceptance: "with 10 meters,
 * batch throughput within 1.2× of the no-meter run"). The load's events then carry `properties`
 * (workloads.ts, wrk-load.lua) drawn from small sets, as a merchant's model / region / route would
 * be, plus a token count and a user id for the numeric and distinct-count meters.
 */

/**
 * The property values of the k-th bench key (its number in the run): a pure function of k, so the
 * autocannon workload and wrk-load.lua send the same bodies (the Lua file spells it out again).
 */
export const BENCH_PROPERTY_VALUES = Object.freeze({
  model: ['gpt-4o', 'gpt-4o-mini', 'claude-3-5', 'llama-3-70b'],
  region: ['eu-west', 'us-east', 'ap-south'],
  route: ['/v1/chat', '/v1/embed', '/v1/images', '/v1/audio', '/v1/moderate'],
});
/** Distinct `user` values: what the unique_count meters count. */
export const BENCH_USERS = 1_000;
export const BENCH_TOKENS_MAX = 4_000;

/** The `properties` JSON of key number k (no leading comma). */
export function benchProperties(k: number): string {
  const v = BENCH_PROPERTY_VALUES;
  return (
    `"properties":{"model":"${v.model[k % v.model.length]}","region":"${v.region[k % v.region.length]}",` +
    `"route":"${v.route[k % v.route.length]}","tokens":"${1 + ((k * 7919) % BENCH_TOKENS_MAX)}","user":"u${k % BENCH_USERS}"}`
  );
}

type Spec = Pick<MeterDefinition, 'slug' | 'aggregation' | 'value_field' | 'group_by'>;

/** Every aggregation, over the built-in fields and properties, with and without group-by. */
export const BENCH_METER_SPECS: readonly Spec[] = Object.freeze([
  { slug: 'checkouts', aggregation: 'count', value_field: null, group_by: [] },
  { slug: 'checkouts-by-model', aggregation: 'count', value_field: null, group_by: ['model'] },
  { slug: 'quantity', aggregation: 'sum', value_field: 'quantity', group_by: [] },
  { slug: 'gmv', aggregation: 'sum', value_field: 'gmv_cents', group_by: [] },
  { slug: 'tokens', aggregation: 'sum', value_field: 'properties.tokens', group_by: ['model', 'region'] },
  { slug: 'max-tokens', aggregation: 'max', value_field: 'properties.tokens', group_by: ['route'] },
  { slug: 'users', aggregation: 'unique_count', value_field: 'properties.user', group_by: [] },
  { slug: 'users-by-region', aggregation: 'unique_count', value_field: 'properties.user', group_by: ['region'] },
  { slug: 'latest-tokens', aggregation: 'latest', value_field: 'properties.tokens', group_by: ['model'] },
  { slug: 'gmv-by-route', aggregation: 'sum', value_field: 'gmv_cents', group_by: ['region', 'route', 'model'] },
] satisfies Spec[]);

export const MAX_BENCH_METERS = METER_LIMITS.maxMetersPerWorkspace;

/**
 * N meters of the bench's event type on `workspaceId`, through the specs in turn (past the tenth,
 * the same computations again under other slugs: more meters, the same kinds of work). Inserted as
 * rows (the CRUD API is control-api's) with the backfill done: the workspace was created for this
 * run, so there is no history, and a backfill would only add aggregator work to the measurement.
 */
export async function defineBenchMeters(
  pool: Pool,
  workspaceId: string,
  n: number,
  eventType = 'checkout.completed',
): Promise<MeterDefinition[]> {
  const out: MeterDefinition[] = [];
  for (let i = 0; i < n; i++) {
    const s = BENCH_METER_SPECS[i % BENCH_METER_SPECS.length]!;
    const slug = i < BENCH_METER_SPECS.length ? s.slug : `${s.slug}-${Math.floor(i / BENCH_METER_SPECS.length)}`;
    const { rows } = await pool.query<Parameters<typeof meterFromRow>[0]>(
      `INSERT INTO meters (id, workspace_id, slug, name, event_types, aggregation, value_field, group_by, backfill_state)
       VALUES ($1, $2, $3, $3, $4, $5, $6, $7, 'done') RETURNING ${METER_COLUMNS}`,
      [newId('mtr'), workspaceId, slug, [eventType], s.aggregation, s.value_field, s.group_by],
    );
    out.push(meterFromRow(rows[0]!));
  }
  return out;
}
