import type { Redis } from '@meterd/core/store';
import { randomBytes } from 'node:crypto';
import type { StoredEvent } from '@meterd/core/event';
import { periodOf } from '@meterd/core/plans';
import { storeMeter } from '../load/sampler.js';
import { markWorkspaceKnown } from '../stack/preload.js';
import { BenchError } from '../errors.js';

/**
 * What the bench uses of ingest's RedisDeduper (imported by path: the bench measures ingest's own
 * code, so it declares the shape instead of depending on ingest at compile time). The stage and
 * bench/micro/dedupe.ts share it, so both follow one signature when ingest's changes.
 */
export interface BenchDeduper {
  generation(): Promise<unknown>;
  markFresh(workspaceId: string): Promise<void>;
  hashes(keys: string[]): Buffer;
  claim(req: {
    workspaceId: string;
    limit: number | null;
    period: string;
    keys: string[];
    token: string;
    hashes?: Buffer;
  }): Promise<{ states: string[] }>;
  commit(
    workspaceId: string,
    period: string,
    keys: string[],
    rows: string[],
    token: string,
    hours?: number[],
    hashes?: Buffer,
  ): Promise<void>;
}
export interface DedupeModule {
  RedisDeduper: new (
    redis: Redis,
    opts: { windowSeconds: number; pendingTtlMs: number; hotSeconds: number; prefix?: string },
  ) => BenchDeduper;
}

/** One group of fresh keys through claim then commit, as an ingest thread does per group commit (no quota limit). */
export async function claimAndCommit(
  d: BenchDeduper,
  g: { workspaceId: string; period: string; keys: string[]; rows: string[]; token: string; hours?: number[] },
): Promise<void> {
  // Computed once for both scripts, as ingest does per tick.
  const hashes = d.hashes(g.keys);
  await d.claim({ workspaceId: g.workspaceId, limit: null, period: g.period, keys: g.keys, token: g.token, hashes });
  await d.commit(g.workspaceId, g.period, g.keys, g.rows, g.token, g.hours, hashes);
}

interface RowsModule {
  compactRow(r: StoredEvent): string;
}

export interface ClaimStage {
  eventsPerSec: number;
  redisCpuPct: number;
  groupSize: number;
  lanes: number;
  depth: number;
}

/**
 * ingest's dedupe round trips alone: claim (the claim Lua) then commit (the commit Lua) of groups of
 * `groupSize` fresh keys, as a thread does for each group commit, from `lanes` dedupers (one Redis
 * connection each, as ingest's threads) with `depth` groups in flight per lane, for `ms`. Events/s
 * and the Redis server's CPU meanwhile: near 100 %, the rate is Redis's ceiling for claims.
 */
export async function measureClaims(
  redis: () => Redis,
  workspaceId: string,
  o: { groupSize: number; lanes: number; depth: number; ms: number },
): Promise<ClaimStage> {
  const base = new URL('../../../../ingest/dist/src/', import.meta.url);
  let dedupe: DedupeModule;
  let rows: RowsModule;
  try {
    dedupe = (await import(new URL('dedupe/redis.js', base).href)) as DedupeModule;
    rows = (await import(new URL('rows.js', base).href)) as RowsModule;
  } catch (err) {
    throw new BenchError(
      'METERD_BENCH_NOT_BUILT',
      `cannot load ingest's dedupe from ${base.pathname}: npx tsc -b ingest`,
      err,
    );
  }
  const clients = Array.from({ length: o.lanes }, redis);
  try {
    const dedupers = clients.map(
      (r) => new dedupe.RedisDeduper(r, { windowSeconds: 600, pendingTtlMs: 10_000, hotSeconds: 60 }),
    );
    await dedupers[0]!.generation();
    await markWorkspaceKnown(clients[0]!, workspaceId);
    const tag = randomBytes(4).toString('hex');
    const period = periodOf(Date.now());
    let next = 0;
    let events = 0;
    const group = (): { keys: string[]; rows: string[] } => {
      const keys: string[] = [];
      const out: string[] = [];
      const now = Date.now();
      for (let i = 0; i < o.groupSize; i++) {
        const n = next++;
        keys.push(`checkout.completed:stage-${tag}-${n}`);
        out.push(
          rows.compactRow({
            id: `ev_${tag}${n.toString(36).padStart(14, '0')}`,
            workspace_id: workspaceId,
            event_type: 'checkout.completed',
            quantity: 1,
            gmv_cents: 1000,
            currency: 'USD',
            idempotency_key: `stage-${tag}-${n}`,
            occurred_at_ms: now,
            received_at_ms: now,
          }),
        );
      }
      return { keys, rows: out };
    };
    const redisCpu = storeMeter('redis-server');
    const t0 = performance.now();
    const until = t0 + o.ms;
    let token = 0;
    await Promise.all(
      dedupers.flatMap((d) =>
        Array.from({ length: o.depth }, async () => {
          while (performance.now() < until) {
            const g = group();
            await claimAndCommit(d, { workspaceId, period, ...g, token: `P:stage${tag}:${token++}` });
            events += o.groupSize;
          }
        }),
      ),
    );
    const secs = (performance.now() - t0) / 1000;
    return {
      eventsPerSec: Math.round(events / secs),
      redisCpuPct: Math.round(redisCpu.sample()),
      groupSize: o.groupSize,
      lanes: o.lanes,
      depth: o.depth,
    };
  } finally {
    await Promise.all(clients.map((c) => c.quit()));
  }
}
