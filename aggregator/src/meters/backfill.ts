import type { ClickHouseClient } from '@clickhouse/client';
import { ClickHouseQueryError, lit, statementRefusedCode } from '@meterd/core/clickhouse';
import { shardSql } from '@meterd/core/contracts';
import { MAX_EVENT_AGE_MS } from '@meterd/core/event';
import {
  METER_COLUMNS,
  meterBackfillErrorText,
  meterFromRow,
  type MeterBackfillError,
  type MeterDefinition,
} from '@meterd/core/meters';
import type { Pool } from '@meterd/core/store';
import { recomputeMeterHours } from './recompute.js';

const HOUR = 3_600_000;

export interface BackfillOptions {
  shards: number;
  /** Hours of one meter recomputed per step (AGGREGATOR_METER_BACKFILL_HOURS). */
  chunkHours: number;
  copyHorizonSeconds: number;
  /** Meters advanced per step, at most. */
  metersPerStep?: number;
  /** Told of each backfill this step marked failed (the aggregator's metric and log). */
  onFailed?: (meter: MeterDefinition, error: MeterBackfillError) => void;
}

interface Progress {
  from: number;
  until: number;
  doneBefore: number;
}

/**
 * Backfill of meters created after events arrived (docs/meters.md): the hours before a meter's
 * creation hour, back to 35 days before it (the window ingest accepts events in), recomputed
 * exactly from the raw events like a closed hour, one chunk of `chunkHours` per meter per step,
 * newest first. Progress lives in the meter's row (`backfill_from`, `backfill_until`,
 * `backfill_done_before`, `backfill_state`) and moves only after the chunk is written, so a crash
 * redoes at most one chunk (the same exact totals, a higher version). The live path covers the
 * creation hour on: its open tail from the shipper's partials once ingest knows the meter, all of
 * it exactly when it closes. A step runs inside an aggregator cycle, with the cycle's version and
 * for the meters whose workspace lies in a shard the cycle holds, so its cost per cycle is bounded
 * and a lost lease stops it like the rollups.
 */
export async function backfillStep(
  ch: ClickHouseClient,
  db: Pool,
  held: ReadonlySet<number>,
  version: bigint,
  o: BackfillOptions,
): Promise<number> {
  if (held.size === 0) return 0;
  const { rows } = await db.query<
    Parameters<typeof meterFromRow>[0] & {
      backfill_from: Date | null;
      backfill_until: Date | null;
      backfill_done_before: Date | null;
      buckets: string[];
    }
  >(
    `SELECT ${METER_COLUMNS}, backfill_from, backfill_until, backfill_done_before,
        ARRAY(SELECT w.id FROM workspaces w WHERE w.id = meters.workspace_id OR w.live_workspace_id = meters.workspace_id) AS buckets
       FROM meters WHERE deleted_at IS NULL AND backfill_state IN ('pending', 'running') ORDER BY created_at, id`,
  );
  if (rows.length === 0) return 0;
  const mine = await heldWorkspaces(ch, [...new Set(rows.map((r) => r.workspace_id))], held, o.shards);
  let advanced = 0;
  for (const r of rows) {
    if (!mine.has(r.workspace_id)) continue;
    if (advanced === (o.metersPerStep ?? 4)) break;
    const meter = meterFromRow(r);
    const p =
      r.backfill_until === null || r.backfill_from === null || r.backfill_done_before === null
        ? await start(db, meter)
        : {
            from: r.backfill_from.getTime(),
            until: r.backfill_until.getTime(),
            doneBefore: r.backfill_done_before.getTime(),
          };
    const lo = Math.max(p.from, p.doneBefore - o.chunkHours * HOUR);
    if (lo < p.doneBefore) {
      const hours = [];
      for (const bucket of r.buckets)
        for (let h = lo; h < p.doneBefore; h += HOUR) hours.push({ workspaceId: bucket, start: h });
      try {
        await recomputeMeterHours(ch, [meter], hours, version, o.copyHorizonSeconds);
      } catch (err) {
        // A transient error fails the cycle, which retries it. One that recurs on every attempt
        // would fail every cycle, holding up the rollups of every workspace of the shard: it stops
        // this meter's backfill alone, visibly (meter.backfill.error, the metric), at this chunk.
        const code = statementRefusedCode(err);
        if (code === undefined) throw err;
        const error: MeterBackfillError = {
          code: 'meter_backfill_refused',
          message: `ClickHouse refused the backfill of ${new Date(lo).toISOString()} to ${new Date(p.doneBefore).toISOString()} (server code ${code}); fix the cause, then set backfill_state to 'running' to resume here: ${(err as Error).message.slice(0, 500)}`,
        };
        await db.query(
          `UPDATE meters SET backfill_state = 'failed', backfill_error = $2
            WHERE id = $1 AND backfill_done_before = $3 AND deleted_at IS NULL`,
          [meter.id, meterBackfillErrorText(error), new Date(p.doneBefore)],
        );
        o.onFailed?.(meter, error);
        advanced++;
        continue;
      }
    }
    // Only from the position read: a concurrent former holder's step never moves it back.
    await db.query(
      `UPDATE meters SET backfill_done_before = $2, backfill_state = $3, backfill_error = NULL
        WHERE id = $1 AND backfill_done_before = $4 AND deleted_at IS NULL`,
      [meter.id, new Date(lo), lo <= p.from ? 'done' : 'running', new Date(p.doneBefore)],
    );
    advanced++;
  }
  return advanced;
}

/** Sets a pending meter's range: [creation hour − 35 days, creation hour), nothing done yet. */
async function start(db: Pool, m: MeterDefinition): Promise<Progress> {
  const until = Math.floor(m.created_at_ms / HOUR) * HOUR;
  const from = until - Math.ceil(MAX_EVENT_AGE_MS / HOUR) * HOUR;
  await db.query(
    `UPDATE meters SET backfill_from = $2, backfill_until = $3, backfill_done_before = $3, backfill_state = 'running'
      WHERE id = $1 AND backfill_until IS NULL`,
    [m.id, new Date(from), new Date(until)],
  );
  const { rows } = await db.query<{ f: Date; u: Date; d: Date }>(
    'SELECT backfill_from AS f, backfill_until AS u, backfill_done_before AS d FROM meters WHERE id = $1',
    [m.id],
  );
  return { from: rows[0]!.f.getTime(), until: rows[0]!.u.getTime(), doneBefore: rows[0]!.d.getTime() };
}

/** The workspaces (of these) whose shard this cycle holds: the shard function is ClickHouse's. */
async function heldWorkspaces(
  ch: ClickHouseClient,
  ids: readonly string[],
  held: ReadonlySet<number>,
  shards: number,
): Promise<Set<string>> {
  const query = `SELECT w, ${shardSql('w', shards)} AS s FROM (SELECT arrayJoin([${ids.map((id) => lit(id)).join(', ')}]) AS w)`;
  try {
    const rows = await (await ch.query({ query, format: 'JSONEachRow' })).json<{ w: string; s: number | string }>();
    return new Set(rows.filter((r) => held.has(Number(r.s))).map((r) => r.w));
  } catch (err) {
    throw new ClickHouseQueryError('finding the shards of meters to backfill', err);
  }
}
