import type { Pool } from '../store/postgres.js';
import { METER_COLUMNS, meterFromRow, type MeterDefinition } from './definition.js';

/**
 * The meters of many buckets at once, cached for `ttlMs`: what ingest's shipper computes a batch's
 * meter partials with, and what the aggregator recomputes hours with. A batch loads every bucket
 * it has not seen within the TTL in one query, so the cost is one query per few seconds, not per
 * batch. A meter created since a bucket was loaded is missing from that bucket's partials for at
 * most `ttlMs`: only the open tail of the hour it was created in can be short, and that hour is
 * recomputed exactly from the raw events when it closes (docs/meters.md).
 */
export class MeterCatalog {
  private readonly cache = new Map<string, { meters: readonly MeterDefinition[]; at: number }>();

  constructor(
    private readonly db: Pool,
    private readonly opts: {
      ttlMs?: number;
      /**
       * When given, a failed load answers the entries it had (stale) or none, after reporting the
       * error here, instead of throwing: ingest's shipper must not stall on a Postgres outage, and a
       * batch without meter partials only leaves an open tail short until its hour closes.
       */
      onLoadError?: (err: unknown) => void;
      now?: () => number;
    } = {},
  ) {}

  private get ttlMs(): number {
    return this.opts.ttlMs ?? 5_000;
  }

  async forBuckets(ids: Iterable<string>): Promise<Map<string, readonly MeterDefinition[]>> {
    const now = (this.opts.now ?? Date.now)();
    const out = new Map<string, readonly MeterDefinition[]>();
    const stale: string[] = [];
    for (const id of ids) {
      if (out.has(id)) continue;
      const hit = this.cache.get(id);
      if (hit !== undefined && now - hit.at < this.ttlMs) out.set(id, hit.meters);
      else {
        stale.push(id);
        out.set(id, []);
      }
    }
    if (stale.length === 0) return out;
    let loaded: Map<string, MeterDefinition[]>;
    try {
      loaded = await metersForBuckets(this.db, stale);
    } catch (err) {
      if (this.opts.onLoadError === undefined) throw err;
      this.opts.onLoadError(err);
      for (const id of stale) out.set(id, this.cache.get(id)?.meters ?? []);
      return out;
    }
    for (const id of stale) {
      const meters = loaded.get(id) ?? [];
      out.set(id, meters);
      // Re-inserted at the back: Map order is load order, so the sweep below stops at the first fresh entry.
      this.cache.delete(id);
      this.cache.set(id, { meters, at: now });
    }
    for (const [id, e] of this.cache) {
      if (now - e.at < this.ttlMs * 10) break;
      this.cache.delete(id);
    }
    return out;
  }
}

/** The live meters of each bucket (a live workspace or its test bucket), ordered by id. */
export async function metersForBuckets(
  db: Pool,
  bucketIds: readonly string[],
): Promise<Map<string, MeterDefinition[]>> {
  const out = new Map<string, MeterDefinition[]>();
  if (bucketIds.length === 0) return out;
  const cols = METER_COLUMNS.split(', ')
    .map((c) => `m.${c}`)
    .join(', ');
  const { rows } = await db.query<Parameters<typeof meterFromRow>[0] & { bucket: string }>(
    `SELECT w.id AS bucket, ${cols} FROM workspaces w
       JOIN meters m ON m.workspace_id = coalesce(w.live_workspace_id, w.id) AND m.deleted_at IS NULL
      WHERE w.id = ANY($1::text[])
      ORDER BY w.id, m.id`,
    [bucketIds],
  );
  for (const r of rows) {
    let list = out.get(r.bucket);
    if (list === undefined) out.set(r.bucket, (list = []));
    list.push(meterFromRow(r));
  }
  return out;
}

/** The live meter `slug` of a bucket's workspace (a test bucket reads its live workspace's meters). */
export async function meterBySlug(db: Pool, bucketId: string, slug: string): Promise<MeterDefinition | undefined> {
  const { rows } = await db.query<Parameters<typeof meterFromRow>[0]>(
    `SELECT ${METER_COLUMNS} FROM meters
      WHERE deleted_at IS NULL AND slug = $2
        AND workspace_id = (SELECT coalesce(live_workspace_id, id) FROM workspaces WHERE id = $1)`,
    [bucketId, slug],
  );
  return rows[0] === undefined ? undefined : meterFromRow(rows[0]);
}
