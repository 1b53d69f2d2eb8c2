import type { ClickHouseClient } from '@clickhouse/client';
import type { MeterCatalog } from '@meterd/core/meters';
import { chunks, timeOrderedChunks, type WindowRef } from '../worker/recompute.js';
import type { OpenBatch, OpenMeterFolds } from './open.js';
import { recomputeMeterHours } from './recompute.js';

/**
 * The meters' share of an aggregator cycle, on the windows the built-in rollups just rewrote (same
 * version, before the watermarks move, so a crash redoes both): closed hours recomputed exactly per
 * bucket and meter, open hours folded from the meter partials (`folds`: each hour once whole, then
 * only the partials of `records`, its new batches). A bucket without meters costs one cached lookup.
 */
export async function recomputeMeterWindows(
  ch: ClickHouseClient,
  catalog: MeterCatalog,
  windows: { closed: readonly WindowRef[]; open: readonly WindowRef[]; records: readonly OpenBatch[] },
  version: bigint,
  opts: { copyHorizonSeconds: number; chunk: number; folds: OpenMeterFolds },
): Promise<void> {
  opts.folds.forget(windows.closed);
  const byBucket = new Map<string, WindowRef[]>();
  for (const w of windows.closed) {
    let list = byBucket.get(w.workspaceId);
    if (list === undefined) byBucket.set(w.workspaceId, (list = []));
    list.push(w);
  }
  const meters = await catalog.forBuckets([...byBucket.keys(), ...windows.open.map((w) => w.workspaceId)]);
  for (const [bucket, hours] of byBucket) {
    const list = meters.get(bucket) ?? [];
    if (list.length === 0) continue;
    for (const part of timeOrderedChunks(hours, opts.chunk))
      await recomputeMeterHours(ch, list, part, version, opts.copyHorizonSeconds);
  }
  const open = windows.open.filter((w) => (meters.get(w.workspaceId) ?? []).length > 0);
  // An hour skipped while its bucket has no meter here (a catalog behind ingest's) may miss batches
  // with partials: it is folded whole when it has meters again.
  opts.folds.forget(windows.open.filter((w) => (meters.get(w.workspaceId) ?? []).length === 0));
  for (const part of chunks(open, opts.chunk)) await opts.folds.fold(ch, part, windows.records, version);
}
