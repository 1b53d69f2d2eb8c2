import { loadavg } from 'node:os';
import { formatRfc3339 } from '@meterd/core/event';
import type { MeterDefinition } from '@meterd/core/meters';
import { connectionsFor, type BenchArgs } from './args.js';
import { targetsTable } from './report/markdown.js';
import { defined, median, phaseCorrect, phaseOnSide, type Side } from './side-phase.js';
import { defineBenchMeters } from './stack/meters.js';
import { waitForMerges } from './stack/preload.js';
import { openBenchStores } from './stack/stores.js';
import { generatorBound, type TargetCheck } from './targets.js';

/**
 * `--meters N --against-no-meters`: issue 20's acceptance, "with 10 meters defined on the bench
 * workspace, batch throughput stays within 1.2× of the no-meter run, and freshness p99 ≤ 2 s", in
 * ONE run so both sides see the same machine. Two store sets: on one the bench workspace has no
 * meter, on the other N (stack/meters.ts). Both sides send the same events, with properties, so the
 * difference is the meters' work alone: the shipper's partials (one more insert per ship round),
 * the aggregator's fold of them, and the exact recompute. The batch scenario runs unthrottled on
 * each side in turn, a fresh ingest and aggregator per phase, N M M N … (each pair of rounds
 * balanced against a drift of the machine's load), after ClickHouse's merges of both databases
 * settled. Each meters phase also checks every meter's rollup against the raw events, exactly.
 */
export type MetersSide = 'none' | 'meters';

export interface MetersRun {
  side: MetersSide;
  round: number;
  eventsPerSec: number | undefined;
  /** Freshness p99: sent → `events`, and sent → counted in the hourly rollup. */
  eventsP99Ms: number | undefined;
  rollupP99Ms: number | undefined;
  aggregatorCycleMedianMs: number | undefined;
  /** Runs whose load generator was the bottleneck (targets.ts generatorBound): the ratio is not judged. */
  generatorBound: string[];
  mergeWaitMs: number;
  loadavg1m: number;
  /** Meters phase: every meter's rollup equals the raw events' figure. */
  metersExact?: boolean;
  correct: boolean;
}

export interface MetersMedians {
  eventsPerSec?: number;
  eventsP99Ms?: number;
  rollupP99Ms?: number;
}

export interface MetersVerdict {
  medians: Record<MetersSide, MetersMedians>;
  /** no meters ÷ N meters, of the medians: how many times faster the run without meters was. */
  ratios: { throughput?: number };
  targets: TargetCheck[];
  /** Every target met. */
  ok: boolean;
}

export interface MetersComparison extends MetersVerdict {
  startedAt: string;
  command: string;
  meters: Pick<MeterDefinition, 'slug' | 'aggregation' | 'value_field' | 'group_by'>[];
  durationSec: number;
  connections: number;
  runs: MetersRun[];
  correct: boolean;
}

/** The issue's bounds: throughput without meters ÷ with them, and rollup freshness p99 with them. */
export const METERS_THROUGHPUT_LIMIT = 1.2;
export const METERS_FRESHNESS_P99_MS = 2_000;
/** Longest wait for the previous phase's merges. */
const MERGE_WAIT_MS = 120_000;

export async function runMetersComparison(
  args: BenchArgs,
  command: string,
  profileDir: string,
  log: (s: string) => void,
): Promise<MetersComparison> {
  const runs: MetersRun[] = [];
  const sides: Side<MetersSide>[] = [];
  const startedAt = new Date().toISOString();
  let meters: MeterDefinition[] = [];
  try {
    for (const name of ['none', 'meters'] as const) {
      const stores = await openBenchStores();
      const tenant = await stores.tenant('enterprise');
      if (name === 'meters') meters = await defineBenchMeters(stores.pool, tenant.workspaceId, args.meters);
      sides.push({ name, stores, tenant, ...(name === 'meters' ? { meters } : {}) });
    }
    log(`bench: ${meters.length} meters on one side (${meters.map((m) => m.slug).join(', ')}), none on the other`);
    const [none, withMeters] = sides as [Side<MetersSide>, Side<MetersSide>];
    const occurredAt = formatRfc3339(Date.now());
    for (let round = 0; round < args.rounds; round++) {
      for (const side of round % 2 === 0 ? [none, withMeters] : [withMeters, none]) {
        let mergeWaitMs = 0;
        for (const s of sides)
          mergeWaitMs += await waitForMerges(s.stores.clickhouse, s.stores.chDatabase, MERGE_WAIT_MS);
        const phase = await phaseOnSide(side, round, args, occurredAt, profileDir, log, { properties: true });
        const run: MetersRun = {
          side: side.name,
          round: round + 1,
          eventsPerSec: phase.meterd.eventsPerSec,
          eventsP99Ms: phase.freshness?.p99Ms,
          rollupP99Ms: phase.freshness?.rollup?.p99Ms,
          aggregatorCycleMedianMs: phase.aggregatorCycles?.medianMs,
          generatorBound: generatorBound(phase),
          mergeWaitMs,
          loadavg1m: Math.round(loadavg()[0]! * 100) / 100,
          ...(phase.meterVerification ? { metersExact: phase.meterVerification.ok } : {}),
          correct: phaseCorrect(phase),
        };
        runs.push(run);
        log(
          `bench: round ${run.round} ${side.name === 'none' ? 'no meters' : `${meters.length} meters`}: ${run.eventsPerSec} events/s, events p99 ${run.eventsP99Ms} ms, rollup p99 ${run.rollupP99Ms} ms, load ${run.loadavg1m}${run.metersExact === undefined ? '' : `, meters ${run.metersExact ? 'exact' : 'NOT exact'}`}`,
        );
      }
    }
  } finally {
    for (const s of sides) await s.stores.close();
  }
  return {
    startedAt,
    command,
    meters: meters.map((m) => ({
      slug: m.slug,
      aggregation: m.aggregation,
      value_field: m.value_field,
      group_by: m.group_by,
    })),
    durationSec: args.durationSec,
    connections: connectionsFor(args, 'batch'),
    runs,
    correct: runs.every((r) => r.correct),
    ...metersVerdict(runs, meters.length),
  };
}

/**
 * Medians per side, the throughput ratio and the targets. A throughput ratio with a
 * generator-bound run on either side is shown but not judged (targets.ts: it measures the load
 * generator); a missing figure fails. Correctness (nothing lost or doubled, meters exact) is a
 * target too: a fast run that counts wrong is no pass.
 */
export function metersVerdict(runs: readonly MetersRun[], meters: number): MetersVerdict {
  const medians = {} as Record<MetersSide, MetersMedians>;
  for (const side of ['none', 'meters'] as const) {
    const rs = runs.filter((r) => r.side === side);
    medians[side] = {
      ...defined('eventsPerSec', median(rs.map((r) => r.eventsPerSec))),
      ...defined('eventsP99Ms', median(rs.map((r) => r.eventsP99Ms))),
      ...defined('rollupP99Ms', median(rs.map((r) => r.rollupP99Ms))),
    };
  }
  const a = medians.none.eventsPerSec;
  const b = medians.meters.eventsPerSec;
  const ratios = a === undefined || b === undefined || b === 0 ? {} : { throughput: Math.round((a / b) * 100) / 100 };
  const bound = runs.flatMap((r) => r.generatorBound.map((g) => `${r.side} round ${r.round}: ${g}`));
  const fmt = (v: number, d = 0) => v.toLocaleString('en-US', { maximumFractionDigits: d });
  const targets: TargetCheck[] = [];
  const t = ratios.throughput;
  targets.push({
    name: `events/s, no meters ÷ ${meters} meters (medians)`,
    target: `≤ ${METERS_THROUGHPUT_LIMIT}`,
    measured:
      t === undefined
        ? 'not measured'
        : bound.length > 0
          ? `${fmt(t, 2)} (generator-bound: ${bound.join(', ')})`
          : fmt(t, 2),
    pass: t === undefined ? false : bound.length > 0 ? undefined : t <= METERS_THROUGHPUT_LIMIT,
  });
  for (const side of ['meters', 'none'] as const) {
    const p99 = medians[side].rollupP99Ms;
    targets.push({
      name: `freshness p99, sent → hourly rollup, ${side === 'none' ? 'no meters' : `${meters} meters`} (median)`,
      target: `≤ ${fmt(METERS_FRESHNESS_P99_MS)} ms`,
      measured: p99 === undefined ? 'not measured' : `${fmt(p99)} ms`,
      // The acceptance bounds the meters side; the other is the same machine's reference.
      pass: side === 'none' ? undefined : p99 !== undefined && p99 <= METERS_FRESHNESS_P99_MS,
    });
  }
  const meterRuns = runs.filter((r) => r.side === 'meters');
  targets.push({
    name: 'meter rollups = raw events, every meters phase',
    target: 'exact',
    measured: `${meterRuns.filter((r) => r.metersExact === true).length} of ${meterRuns.length} phases exact`,
    pass: meterRuns.length > 0 && meterRuns.every((r) => r.metersExact === true),
  });
  targets.push({
    name: 'lost / doubled events, every phase',
    target: '0',
    measured: `${runs.filter((r) => r.correct).length} of ${runs.length} phases correct`,
    pass: runs.length > 0 && runs.every((r) => r.correct),
  });
  return { medians, ratios, targets, ok: targets.every((x) => x.pass !== false) && targets[0]!.pass === true };
}

export function metersMarkdown(c: MetersComparison): string {
  const n = (v: number | undefined) =>
    v === undefined ? '–' : v.toLocaleString('en-US', { maximumFractionDigits: 2 });
  let md = `# meterd benchmark — batch with ${c.meters.length} meters vs none, one run\n\n`;
  md += `- command: \`${c.command}\`\n- started: ${c.startedAt}\n`;
  md += `- batch, ${c.connections} connections, ${c.durationSec} s per phase, events with properties on both sides\n`;
  md += `- meters: ${c.meters.map((m) => `${m.slug} (${m.aggregation}${m.value_field ? ` of ${m.value_field}` : ''}${m.group_by.length > 0 ? ` by ${m.group_by.join(', ')}` : ''})`).join('; ')}\n`;
  md += `- correctness: **${c.correct ? 'PASS' : 'FAIL'}**\n\n`;
  md +=
    '| round | meters | events/s | `events` p99 ms | rollup p99 ms | aggregator cycle median ms | meters exact | merge wait ms | load avg |\n';
  md += '|---:|---:|---:|---:|---:|---:|---|---:|---:|\n';
  for (const r of c.runs)
    md += `| ${r.round} | ${r.side === 'none' ? 0 : c.meters.length} | ${n(r.eventsPerSec)} | ${n(r.eventsP99Ms)} | ${n(r.rollupP99Ms)} | ${n(r.aggregatorCycleMedianMs)} | ${r.metersExact === undefined ? '–' : r.metersExact ? 'yes' : '**no**'} | ${r.mergeWaitMs} | ${r.loadavg1m} |\n`;
  const a = c.medians.none;
  const b = c.medians.meters;
  md += `\nMedians, no meters / ${c.meters.length} meters: events/s ${n(a.eventsPerSec)} / ${n(b.eventsPerSec)} (no meters ÷ meters **${c.ratios.throughput ?? '–'}×**), rollup p99 ${n(a.rollupP99Ms)} / ${n(b.rollupP99Ms)} ms, \`events\` p99 ${n(a.eventsP99Ms)} / ${n(b.eventsP99Ms)} ms\n\n`;
  md += targetsTable(c.targets);
  md += `\nVerdict: ${c.ok ? `✅ within ${METERS_THROUGHPUT_LIMIT}× and ≤ ${METERS_FRESHNESS_P99_MS} ms` : '❌ a target is missed (or not judged)'}\n`;
  return md;
}
