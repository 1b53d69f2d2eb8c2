import assert from 'node:assert/strict';
import type { ClickHouseClient } from '@clickhouse/client';
import { Aggregator } from '../src/worker/aggregator.js';
import type { Pool } from '@meterd/core/store';
import { PgTableLeases } from '../src/worker/leases.js';
import { reconcile } from '../src/reconcile/compare.js';
import {
  COPY_HORIZON_S,
  catchUp,
  insertEvents,
  type Ev,
  randomStream,
  referenceSnapshot,
  rng,
  rollupSnapshot,
  snapshotToObject,
} from './helpers.js';

const SHARDS = 4;
const CLOSE_AFTER = 600;

/**
 * The property shared by the 18.16 and chDB runs: after any interleaving of random insert batches
 * and aggregator cycles, the rollups equal a reference computed from the distinct events alone,
 * and reconcile finds nothing. Workspace ids carry the seed so runs never see each other's rows.
 */
export async function checkProperty(ch: ClickHouseClient, pool: Pool, seed: number): Promise<void> {
  const rand = rng(seed);
  const workspaces = [`ws_p${seed}a`, `ws_p${seed}b`, `ws_p${seed}c`];
  // 28 Jan 22:00 to ~2 Feb: crosses day and month boundaries.
  const base = Date.UTC(2024, 0, 28, 22);
  const { batches, distinct } = randomStream(rand, {
    workspaces,
    distinct: 300,
    base,
    spanMs: 4 * 86_400_000,
    closeAfterSeconds: CLOSE_AFTER,
  });
  const agg = new Aggregator(ch, new PgTableLeases(pool, { shards: SHARDS, ttlMs: 10_000 }), {
    shards: SHARDS,
    closeAfterSeconds: CLOSE_AFTER,
    copyHorizonSeconds: COPY_HORIZON_S,
    windowsPerQuery: 7,
  });
  try {
    // Mid-stream checks matter most: copies in different parts are not merged yet, so only the
    // aggregator's own dedupe stands between them and a double count.
    const seen = new Set<string>();
    const tripleOf = (e: { workspace_id: string; event_type: string; idempotency_key: string }): string =>
      `${e.workspace_id}|${e.event_type}|${e.idempotency_key}`;
    await catchUp(agg, SHARDS);
    for (const b of batches) {
      await insertEvents(ch, b);
      for (const e of b) seen.add(tripleOf(e));
      if (rand() < 0.3) {
        await agg.runOnce();
        await assertRollups(
          ch,
          workspaces,
          distinct.filter((e) => seen.has(tripleOf(e))),
          `seed ${seed}, mid-stream`,
        );
      }
    }
    await agg.runOnce();
    await assertRollups(ch, workspaces, distinct, `seed ${seed}`);
    const reconciled = async (when: string): Promise<void> => {
      for (const ws of workspaces) {
        const diffs = await reconcile(ch, {
          workspaceId: ws,
          from: Date.UTC(2024, 0, 1),
          to: Date.UTC(2024, 2, 1),
          closeAfterSeconds: CLOSE_AFTER,
          copyHorizonSeconds: COPY_HORIZON_S,
        });
        assert.deepEqual(diffs, [], `seed ${seed}: reconcile found differences for ${ws} ${when}`);
      }
    };
    await reconciled('before merges');
    // Merges keep the copy readers take: after every copy is merged away, the raw events still
    // give the same totals (with a merge rule other than the readers', a forgotten retry would
    // replace the first copy and move the event to another hour).
    await ch.command({ query: 'OPTIMIZE TABLE events FINAL' });
    await reconciled('after OPTIMIZE FINAL');
  } finally {
    await agg.stop();
  }
}

async function assertRollups(ch: ClickHouseClient, workspaces: string[], distinct: Ev[], label: string): Promise<void> {
  const want = referenceSnapshot(distinct, CLOSE_AFTER);
  const got = await rollupSnapshot(ch);
  for (const g of ['hour', 'day', 'month'] as const) {
    for (const k of [...got[g].keys()]) if (!workspaces.some((w) => k.startsWith(`${w} `))) got[g].delete(k);
  }
  assert.deepEqual(snapshotToObject(got), snapshotToObject(want), `${label}: rollups differ from the reference`);
}
