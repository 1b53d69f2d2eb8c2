import type { Pool } from '../store/postgres.js';

/**
 * Meter definitions (issue 20; infra/postgres/011_meters.sql, docs/meters.md). The contract every
 * service shares: control-api writes them, ingest's shipper and the aggregator roll events up by
 * them, the usage API and alerts read their rollups, billing-sync pushes the billed ones.
 */

export const METER_AGGREGATIONS = ['sum', 'count', 'max', 'unique_count', 'latest'] as const;
export type MeterAggregation = (typeof METER_AGGREGATIONS)[number];

/** `quantity`, `gmv_cents`, or `properties.<key>` (a property of the event). */
export type MeterValueField = 'quantity' | 'gmv_cents' | `properties.${string}`;

/** Bounds of an event's `properties` (documented in docs/api.md) and of a definition. */
export const PROPERTY_LIMITS = Object.freeze({ maxKeys: 16, keyMax: 64, valueMax: 256 });
export const METER_LIMITS = Object.freeze({ maxEventTypes: 10, maxGroupBy: 3, maxMetersPerWorkspace: 50 });

/** A property key: what `properties` accepts as a key and what group_by / value_field may name. */
export const PROPERTY_KEY_RE = /^[A-Za-z0-9_.-]{1,64}$/;
export const METER_SLUG_RE = /^[a-z0-9][a-z0-9_-]{0,62}$/;

export interface MeterDefinition {
  id: string;
  /** The live workspace the meter belongs to; it applies to that workspace's test bucket too. */
  workspace_id: string;
  slug: string;
  name: string;
  description: string;
  event_types: string[];
  aggregation: MeterAggregation;
  /** null exactly when aggregation is count. */
  value_field: MeterValueField | null;
  group_by: string[];
  stripe_event_name: string | null;
  created_at_ms: number;
  updated_at_ms: number;
  backfill_state: 'pending' | 'running' | 'done' | 'failed';
}

type MeterRow = Omit<MeterDefinition, 'created_at_ms' | 'updated_at_ms'> & { created_at: Date; updated_at: Date };

export const METER_COLUMNS =
  'id, workspace_id, slug, name, description, event_types, aggregation, value_field, group_by, stripe_event_name, created_at, updated_at, backfill_state';

export function meterFromRow(r: MeterRow): MeterDefinition {
  return {
    id: r.id,
    workspace_id: r.workspace_id,
    slug: r.slug,
    name: r.name,
    description: r.description,
    event_types: r.event_types,
    aggregation: r.aggregation,
    value_field: r.value_field,
    group_by: r.group_by,
    stripe_event_name: r.stripe_event_name,
    created_at_ms: r.created_at.getTime(),
    updated_at_ms: r.updated_at.getTime(),
    backfill_state: r.backfill_state,
  };
}

/**
 * The live meters that apply to a bucket's events: its own, or its live workspace's when the id is a
 * test bucket. Ordered by id so every reader sees the same order.
 */
export async function metersForBucket(db: Pool, bucketId: string): Promise<MeterDefinition[]> {
  const { rows } = await db.query<MeterRow>(
    `SELECT ${METER_COLUMNS} FROM meters
      WHERE deleted_at IS NULL
        AND workspace_id = (SELECT coalesce(live_workspace_id, id) FROM workspaces WHERE id = $1)
      ORDER BY id`,
    [bucketId],
  );
  return rows.map(meterFromRow);
}

/**
 * Why a meter's backfill stopped in state `failed` (`meters.backfill_error`, the API's
 * `meter.backfill.error.code`): stable codes, documented in docs/meters.md. A failed backfill is
 * one that would fail the same way on every attempt; it stops for that meter alone (the others and
 * the rollups go on) until an operator fixes the cause and sets the state back to `running`.
 */
export const METER_BACKFILL_ERRORS = Object.freeze({
  meter_backfill_refused:
    "ClickHouse refused the backfill's statement itself (a server limit such as max_query_size or max_rows_to_read, or a statement it cannot run), as it would on every attempt.",
  meter_backfill_failed: 'The backfill was marked failed with a reason in words only (by hand, not by the aggregator).',
});
export type MeterBackfillErrorCode = keyof typeof METER_BACKFILL_ERRORS;

export interface MeterBackfillError {
  code: MeterBackfillErrorCode;
  message: string;
}

/** The `backfill_error` column's text: `<code>: <message>` (meterBackfillErrorOf reads it back). */
export function meterBackfillErrorText(e: MeterBackfillError): string {
  return `${e.code}: ${e.message}`;
}

/** The column's text as code and message; null for none; text not in that form is meter_backfill_failed. */
export function meterBackfillErrorOf(text: string | null): MeterBackfillError | null {
  if (text === null) return null;
  const m = /^([a-z_]+): ([\s\S]*)$/.exec(text);
  if (m === null || !Object.hasOwn(METER_BACKFILL_ERRORS, m[1]!))
    return { code: 'meter_backfill_failed', message: text };
  return { code: m[1] as MeterBackfillErrorCode, message: m[2]! };
}
