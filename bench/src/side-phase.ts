import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { MeterDefinition } from '@meterd/core/meters';
import type { BenchArgs } from './args.js';
import type { Child } from './children/child.js';
import type { Tenant } from './load/workloads.js';
import { preflight, recoveryDone, warmUp } from './preflight.js';
import { ROLLUP_TABLE, runPhase, startAggregator, startIngest, type PhaseReport } from './run.js';
import type { BenchStores } from './stack/stores.js';

/**
 * One side of a comparison in one run (preload-compare.ts, meters-compare.ts): a store set of its
 * own (Postgres + ClickHouse databases) and the workspace the load goes to.
 */
export interface Side<Name extends string = string> {
  name: Name;
  stores: BenchStores;
  tenant: Tenant;
  /** Meters defined on the tenant: verified against the raw events after the phase. */
  meters?: readonly MeterDefinition[];
}

/** Longest wait for ingest's one-off dedupe recovery of a preloaded workspace (see warmUp). */
const WARM_UP_MS = 600_000;

/**
 * One batch phase on one side, with an ingest and an aggregator of its own (started for the phase,
 * stopped after it), so no phase inherits another's spool, caches or backlog.
 */
export async function phaseOnSide(
  side: Side,
  round: number,
  args: BenchArgs,
  occurredAt: string,
  profileDir: string,
  log: (s: string) => void,
  opts: { eventsPerSec?: number; properties?: boolean } = {},
): Promise<PhaseReport> {
  const spoolDir = mkdtempSync(join(tmpdir(), 'meterd-bench-spool-'));
  let ingest: Child | undefined;
  let aggregator: Child | undefined;
  try {
    ingest = await startIngest(side.stores, args, spoolDir, profileDir);
    aggregator = await startAggregator(side.stores, { aggregator: { running: false, note: '' } });
    if (aggregator === undefined) throw new Error('the aggregator did not start: rollup freshness cannot be compared');
    await preflight(ingest.url, side.tenant);
    const warmUpMs = await warmUp(
      ingest.url,
      side.tenant,
      `${side.stores.tag}r${round}`,
      WARM_UP_MS,
      recoveryDone(
        side.stores.redis,
        side.tenant.workspaceId,
        args.ingestEnv.REDIS_KEY_PREFIX ?? process.env.REDIS_KEY_PREFIX,
      ),
    );
    if (warmUpMs > 1_000)
      log(`bench: ${side.name} store: the first event was stored after ${warmUpMs} ms (dedupe recovery)`);
    return await runPhase({
      o: { args: { ...args, compare: false }, command: '', profileDir },
      scenario: 'batch',
      tag: `${side.stores.tag}r${round}`,
      base: ingest.url,
      tenants: [side.tenant],
      probeTenant: side.tenant,
      occurredAt,
      stores: side.stores,
      ingestPid: ingest.pid,
      verifyCh: side.stores.clickhouse,
      rollupTable: ROLLUP_TABLE,
      aggregatorUrl: aggregator.url,
      log,
      watch: { aggregator: aggregator.pid },
      ...(opts.eventsPerSec === undefined ? {} : { eventsPerSec: opts.eventsPerSec }),
      ...(opts.properties === undefined ? {} : { properties: opts.properties }),
      ...(side.meters === undefined ? {} : { meters: side.meters }),
    });
  } finally {
    if (ingest) await ingest.stop();
    if (aggregator) await aggregator.stop();
    rmSync(spoolDir, { recursive: true, force: true });
  }
}

/** Every verification of a phase passed (nothing lost or doubled; meters exact). */
export function phaseCorrect(p: PhaseReport): boolean {
  return [p.verification, p.probeVerification, p.meterVerification].every((v) => v === undefined || v.ok);
}

export function median(xs: readonly (number | undefined)[]): number | undefined {
  const v = xs.filter((x): x is number => x !== undefined).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const mid = v.length >> 1;
  return v.length % 2 === 1 ? v[mid] : Math.round(((v[mid - 1]! + v[mid]!) / 2) * 100) / 100;
}

export function defined<K extends string>(k: K, v: number | undefined): Partial<Record<K, number>> {
  return v === undefined ? {} : ({ [k]: v } as Record<K, number>);
}
