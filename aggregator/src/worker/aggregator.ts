import type { ClickHouseClient } from '@clickhouse/client';
import { Loop, type Logger } from '@meterd/core';
import type { AggregatorMetrics } from '../metrics.js';
import { detectChangedWindows } from './detect.js';
import type { ShardLeases } from './leases.js';
import { recomputeWindows } from './recompute.js';
import { readShardStates, writeShardStates, type ShardState } from './state.js';

export interface AggregatorOptions {
  shards: number;
  closeAfterSeconds: number;
  windowsPerQuery: number;
}

export interface CycleResult {
  shards: number;
  windows: number;
}

/**
 * The rollup worker. Each cycle, for the shards it holds a lease on: find the hours whose raw
 * events changed since the shard's watermark, recompute them (and their days and months) exactly,
 * then advance the watermark. Because a window is always recomputed whole from the distinct events
 * and written with a higher version, doing a cycle twice (crash before the watermark moved, a
 * lease handed over mid-cycle) changes nothing; skipping one is impossible since the watermark
 * only moves after the rollups are written.
 */
export class Aggregator {
  private readonly states = new Map<number, ShardState>();
  private lastUpdated = 0;
  private loop: Loop | undefined;

  constructor(
    private readonly ch: ClickHouseClient,
    private readonly leases: ShardLeases,
    private readonly opts: AggregatorOptions,
    private readonly metrics?: AggregatorMetrics,
    private readonly log?: Logger,
  ) {}

  async runOnce(): Promise<CycleResult> {
    const held = await this.leases.refresh();
    for (const s of this.states.keys()) if (!held.has(s)) this.states.delete(s);
    const fresh = [...held].filter((s) => !this.states.has(s));
    if (fresh.length > 0) {
      const stored = await readShardStates(this.ch, fresh);
      for (const s of fresh) {
        this.states.set(s, stored.get(s) ?? { shard: s, block: 0n, version: 0n, asOfMs: 0 });
      }
    }
    this.metrics?.shardsHeld.set(this.states.size);
    if (this.states.size === 0) return { shards: 0, windows: 0 };

    const asOf = Date.now();
    const watermarks = new Map([...this.states].map(([s, st]) => [s, st.block]));
    const found = await detectChangedWindows(this.ch, this.opts.shards, watermarks);
    // The version is drawn before the recompute reads the events, so a successor that draws later
    // writes a higher version from a snapshot at least as new. The leases are re-checked last: a
    // process that lost them meanwhile writes nothing.
    const version = await this.leases.nextVersion();
    const still = await this.leases.verify();
    for (const s of this.states.keys()) if (!still.has(s)) this.states.delete(s);
    if (this.states.size === 0) return { shards: 0, windows: 0 };
    const windows = found.windows.filter((w) => still.has(w.shard));
    if (windows.length > 0) {
      await recomputeWindows(this.ch, windows, version, this.opts.closeAfterSeconds, this.opts.windowsPerQuery);
    }
    const next: ShardState[] = [];
    for (const st of this.states.values()) {
      const block = found.maxBlock !== undefined && found.maxBlock > st.block ? found.maxBlock : st.block;
      next.push({ shard: st.shard, block, version, asOfMs: asOf });
    }
    await writeShardStates(this.ch, next, this.nextUpdated());
    for (const st of next) this.states.set(st.shard, st);
    this.metrics?.windows.inc(windows.length);
    return { shards: next.length, windows: windows.length };
  }

  /** Seconds since the oldest as-of of the held shards, or -1 when none is held. */
  watermarkAgeSeconds(now = Date.now()): number {
    let oldest = Infinity;
    for (const st of this.states.values()) oldest = Math.min(oldest, st.asOfMs);
    return oldest === Infinity ? -1 : (now - oldest) / 1000;
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

  private nextUpdated(): number {
    this.lastUpdated = Math.max(Date.now(), this.lastUpdated + 1);
    return this.lastUpdated;
  }
}
