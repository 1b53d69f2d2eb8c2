import type { ClickHouseClient } from '@clickhouse/client';
import { type Logger } from '@meterd/core/log';
import { Loop } from '@meterd/core/loop';
import type { MeterCatalog } from '@meterd/core/meters';
import type { AggregatorMetrics } from '../metrics.js';
import type { Pool } from '@meterd/core/store';
import { backfillStep } from '../meters/backfill.js';
import { recomputeMeterWindows } from '../meters/cycle.js';
import { OpenMeterFolds } from '../meters/open.js';
import {
  LOOKBACK_SECONDS,
  closesAt,
  readClosingWindows,
  readNewRecords,
  serverNow,
  type BatchWindowRecord,
  type Window,
} from './detect.js';
import type { ShardLeases } from './leases.js';
import { recomputeWindows } from './recompute.js';
import { initialState, readShardStates, writeShardStates, type ShardState } from './state.js';

export interface AggregatorOptions {
  shards: number;
  closeAfterSeconds: number;
  windowsPerQuery: number;
  /** See RecomputeOptions.copyHorizonSeconds (AGGREGATOR_COPY_HORIZON_SECONDS). */
  copyHorizonSeconds: number;
  /** How far before its watermark a shard's records are read again (detect.ts); LOOKBACK_SECONDS by default. */
  lookbackSeconds?: number;
  /** The meters to roll up with the built-in rollups (docs/meters.md); none when left out. */
  meters?: MeterCatalog;
  /** Backfill of new meters, a chunk of `hours` per meter per cycle (meters/backfill.ts); none when left out. */
  backfill?: { db: Pool; hours: number };
}

export interface CycleResult {
  shards: number;
  windows: number;
  /** Of which closed hours recomputed from raw events (the rest: open hours folded from partials). */
  closed: number;
}

/**
 * The rollup worker. Each cycle, for the shards it holds a lease on: read the batch records
 * (`event_windows`) shipped since the shard's watermark, and the windows whose close time passed;
 * fold each open hour from its batches' partials, recompute each closed hour exactly from the raw
 * events (once when it closes, and again whenever a batch touches it later), then advance the
 * watermarks. Work per cycle follows what was shipped since and what closed, never the history.
 * A window is always rewritten whole with a higher version, so doing a cycle twice (crash before
 * the watermarks moved, a lease handed over mid-cycle) changes nothing; skipping one is impossible
 * since the watermarks only move after the rollups are written. "Open" and "closed" are judged on
 * the ClickHouse server's clock, the one the records are stamped with, and a window past a shard's
 * closedUntil is closed for every later holder, so an exact total is never folded over again.
 */
export class Aggregator {
  private readonly states = new Map<number, ShardState>();
  /** Records already folded in, by key, with their insert second: the look-back skips them. */
  private readonly seen = new Map<string, number>();
  private loop: Loop | undefined;
  /** The meters' open hours as this process folded them (meters/open.ts). */
  private readonly meterFolds = new OpenMeterFolds();

  constructor(
    private readonly ch: ClickHouseClient,
    private readonly leases: ShardLeases,
    private readonly opts: AggregatorOptions,
    private readonly metrics?: AggregatorMetrics,
    private readonly log?: Logger,
  ) {}

  async runOnce(): Promise<CycleResult> {
    const held = await this.leases.refresh();
    this.dropShards(held);
    const fresh = [...held].filter((s) => !this.states.has(s));
    if (fresh.length > 0) {
      const stored = await readShardStates(this.ch, fresh);
      for (const s of fresh) this.states.set(s, stored.get(s) ?? initialState(s));
    }
    this.metrics?.shardsHeld.set(this.states.size);
    if (this.states.size === 0) return { shards: 0, windows: 0, closed: 0 };

    const asOf = Date.now();
    const nowS = await serverNow(this.ch);
    const { shards, closeAfterSeconds } = this.opts;
    const records = (
      await readNewRecords(
        this.ch,
        shards,
        new Map([...this.states].map(([s, st]) => [s, st.seenUntil])),
        nowS,
        this.lookback,
      )
    ).filter((r) => !this.seen.has(r.key));
    const closing = await readClosingWindows(
      this.ch,
      shards,
      new Map([...this.states].map(([s, st]) => [s, st.closedUntil])),
      nowS,
      closeAfterSeconds,
    );
    // The version is drawn before the recompute reads the events, so a successor that draws later
    // writes a higher version from a snapshot at least as new. The leases are re-checked last: a
    // process that lost them meanwhile writes nothing.
    const version = await this.leases.nextVersion();
    const still = await this.leases.verify();
    this.dropShards(still);
    if (this.states.size === 0) return { shards: 0, windows: 0, closed: 0 };
    const split = this.classify([...records, ...closing], nowS, still);
    if (split.closed.length + split.open.length > 0) {
      const closed = await recomputeWindows(this.ch, split, version, {
        closeAfterSeconds,
        copyHorizonSeconds: this.opts.copyHorizonSeconds,
        chunk: this.opts.windowsPerQuery,
      });
      if (this.opts.meters !== undefined) {
        await recomputeMeterWindows(this.ch, this.opts.meters, { closed, open: split.open, records }, version, {
          copyHorizonSeconds: this.opts.copyHorizonSeconds,
          chunk: this.opts.windowsPerQuery,
          folds: this.meterFolds,
        });
      }
    }
    if (this.opts.backfill !== undefined) {
      await backfillStep(this.ch, this.opts.backfill.db, new Set(this.states.keys()), version, {
        shards,
        chunkHours: this.opts.backfill.hours,
        copyHorizonSeconds: this.opts.copyHorizonSeconds,
        onFailed: (meter, error) => {
          this.metrics?.meterBackfillsFailed[error.code].inc();
          this.log?.error({ meter: meter.id, workspace: meter.workspace_id, ...error }, 'meter backfill failed');
        },
      });
    }
    const next: ShardState[] = [...this.states.values()].map((st) => {
      const closedUntil = Math.max(st.closedUntil, nowS);
      return {
        shard: st.shard,
        seenUntil: Math.max(st.seenUntil, nowS),
        closedUntil,
        closedBefore: Math.max(st.closedBefore, closedUntil - closeAfterSeconds),
        version,
        asOfMs: asOf,
      };
    });
    await writeShardStates(this.ch, next);
    for (const st of next) this.states.set(st.shard, st);
    this.remember(records);
    const windows = split.closed.length + split.open.length;
    this.metrics?.windows.inc(windows);
    return { shards: next.length, windows, closed: split.closed.length };
  }

  /**
   * Distinct windows of the held shards, closed (close time reached on the server's clock, or
   * already past the shard's closedUntil) or open.
   */
  private classify(
    windows: readonly Window[],
    nowS: number,
    held: ReadonlySet<number>,
  ): { closed: Window[]; open: Window[] } {
    const byKey = new Map<string, Window>();
    for (const w of windows) if (held.has(w.shard)) byKey.set(`${w.workspaceId}|${w.start}`, w);
    const closed: Window[] = [];
    const open: Window[] = [];
    for (const w of byKey.values()) {
      const at = closesAt(w.start, this.opts.closeAfterSeconds);
      const closedUntil = this.states.get(w.shard)?.closedUntil ?? 0;
      (at <= nowS || at <= closedUntil ? closed : open).push(w);
    }
    return { closed, open };
  }

  /**
   * Forgets the shards no longer held. Their open meter hours as folded here are dropped with them
   * (all of them: rare, and the next cycle folds each hour whole once): another holder may have
   * folded batches since.
   */
  private dropShards(held: ReadonlySet<number>): void {
    for (const s of this.states.keys()) {
      if (held.has(s)) continue;
      this.states.delete(s);
      this.meterFolds.clear();
    }
  }

  private remember(records: readonly BatchWindowRecord[]): void {
    for (const r of records) this.seen.set(r.key, r.insertedAt);
    let floor = Infinity;
    for (const st of this.states.values()) floor = Math.min(floor, st.seenUntil);
    for (const [k, t] of this.seen) if (t < floor - this.lookback) this.seen.delete(k);
  }

  /** Seconds since the oldest as-of of the held shards, or -1 when none is held. */
  watermarkAgeSeconds(now = Date.now()): number {
    let oldest = Infinity;
    for (const st of this.states.values()) oldest = Math.min(oldest, st.asOfMs);
    return oldest === Infinity ? -1 : (now - oldest) / 1000;
  }

  /**
   * Starts the next cycle now, or right after the one in flight, instead of at the next poll: an
   * ingest process recorded batches (BATCHES_RECORDED_CHANNEL). Each ship round of each ingest
   * process adds at most one cycle (about 2 per second per process at SHIP_INTERVAL_MS=500).
   */
  wake(): void {
    this.loop?.wake();
  }

  start(pollMs: number): void {
    // Cycles start every pollMs; one that took longer than that is followed at once.
    this.loop = new Loop(
      async () => {
        const t0 = performance.now();
        await this.runOnce();
        const seconds = (performance.now() - t0) / 1000;
        this.metrics?.cycles.inc();
        this.metrics?.cycleSeconds.observe(seconds);
        return Math.max(0, pollMs - seconds * 1000);
      },
      {
        intervalMs: pollMs,
        onError: (err) => {
          this.metrics?.cycleErrors.inc();
          this.log?.error({ err }, 'rollup cycle failed; retrying on the next poll');
        },
      },
    ).start();
  }

  async stop(): Promise<void> {
    await this.loop?.stop();
    await this.leases.close();
  }

  private get lookback(): number {
    return this.opts.lookbackSeconds ?? LOOKBACK_SECONDS;
  }
}
