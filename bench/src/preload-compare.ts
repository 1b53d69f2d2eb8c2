import { loadavg } from 'node:os';
import { formatRfc3339 } from '@meterd/core/event';
import type { BenchArgs } from './args.js';
import { defined, median, phaseCorrect, phaseOnSide, type Side } from './side-phase.js';
import { markWorkspaceKnown, preloadEvents, waitForMerges } from './stack/preload.js';
import { openBenchStores } from './stack/stores.js';

/**
 * `--preload N --against-empty`: the issue's comparison, preloaded store ÷ empty store, in ONE run,
 * so both sides see the same machine. Two store sets (Postgres + ClickHouse databases of their
 * own): one empty, one whose bench workspace holds N events of this month's history. After the
 * preload, and again before every phase, the bench waits for ClickHouse's merges in both databases
 * to settle, so a phase is never charged with the preload's (or the previous phase's) merging,
 * and until ingest stores the workspace's events. The preloaded workspace is marked as one Redis
 * kept the state of (markWorkspaceKnown), so ingest does not take it for a Redis data loss and
 * rebuild its dedupe tier from the preload meanwhile (the warm-up waits that out otherwise).
 * Then the batch scenario at a fixed rate (`--rate`, so both sides do the same work) runs on each
 * side in turn, a fresh ingest and aggregator per phase, in the order E P P E E P … (each pair of
 * rounds balanced against a drift of the machine's load). Reported per phase and as medians per
 * side: ClickHouse CPU per 1k events and rollup freshness p99; ratios are of the medians.
 */
export interface PreloadRun {
  side: 'empty' | 'preloaded';
  round: number;
  eventsPerSec: number | undefined;
  clickhouseCpuPct: number;
  clickhouseCpuPerKEvents: number | undefined;
  rollupP99Ms: number | undefined;
  eventsP99Ms: number | undefined;
  insertMeanMs: number | undefined;
  mergeWaitMs: number;
  loadavg1m: number;
  correct: boolean;
}

export interface PreloadComparison {
  startedAt: string;
  command: string;
  preload: number;
  rateEventsPerSec: number;
  durationSec: number;
  preloadSec: number;
  preloadMergeWaitSec: number;
  runs: PreloadRun[];
  medians: Record<PreloadRun['side'], { clickhouseCpuPerKEvents?: number; rollupP99Ms?: number; eventsP99Ms?: number }>;
  /** preloaded ÷ empty, of the medians. */
  ratios: { clickhouseCpuPerEvent?: number; rollupP99?: number; eventsP99?: number };
  /** Both ratios within PRELOAD_LIMIT. */
  ok: boolean;
  correct: boolean;
}

export const PRELOAD_LIMIT = 1.2;
/** Longest wait for merges: a 50 M preload on 18.16 merges for minutes at most here. */
const MERGE_WAIT_MS = 600_000;

export async function runPreloadComparison(
  args: BenchArgs,
  command: string,
  profileDir: string,
  log: (s: string) => void,
): Promise<PreloadComparison> {
  const out: PreloadComparison = {
    startedAt: new Date().toISOString(),
    command,
    preload: args.preload,
    rateEventsPerSec: args.rate,
    durationSec: args.durationSec,
    preloadSec: 0,
    preloadMergeWaitSec: 0,
    runs: [],
    medians: { empty: {}, preloaded: {} },
    ratios: {},
    ok: false,
    correct: true,
  };
  const sides: Side<PreloadRun['side']>[] = [];
  try {
    for (const name of ['empty', 'preloaded'] as const) {
      const stores = await openBenchStores();
      sides.push({ name, stores, tenant: await stores.tenant('enterprise') });
    }
    const [empty, preloaded] = sides as [Side<PreloadRun['side']>, Side<PreloadRun['side']>];
    log(`bench: preloading ${args.preload} events into ${preloaded.tenant.workspaceId}'s current month…`);
    const t0 = Date.now();
    await preloadEvents(preloaded.stores.clickhouse, preloaded.tenant.workspaceId, args.preload, Date.now());
    out.preloadSec = Math.round((Date.now() - t0) / 100) / 10;
    const prefix = args.ingestEnv.REDIS_KEY_PREFIX ?? process.env.REDIS_KEY_PREFIX;
    const known = await markWorkspaceKnown(preloaded.stores.redis, preloaded.tenant.workspaceId, prefix || undefined);
    if (!known) log("bench: this Redis has no epoch yet: ingest's dedupe recovery of the preload is waited out");
    const settle = async () => {
      let ms = 0;
      for (const s of sides) ms += await waitForMerges(s.stores.clickhouse, s.stores.chDatabase, MERGE_WAIT_MS);
      return ms;
    };
    out.preloadMergeWaitSec = Math.round((await settle()) / 100) / 10;
    log(`bench: preloaded in ${out.preloadSec} s; merges settled after ${out.preloadMergeWaitSec} s more`);
    // Every probe of the run is stamped with this one occurred_at, like a single bench run's.
    const occurredAt = formatRfc3339(Date.now());
    for (let round = 0; round < args.rounds; round++) {
      for (const side of round % 2 === 0 ? [empty, preloaded] : [preloaded, empty]) {
        const mergeWaitMs = await settle();
        const run = await phaseOn(side, round, args, occurredAt, profileDir, log);
        out.runs.push({ ...run, mergeWaitMs });
        if (!run.correct) out.correct = false;
        log(
          `bench: round ${round + 1} ${side.name}: ${run.eventsPerSec} events/s, ClickHouse ${run.clickhouseCpuPct} % (${run.clickhouseCpuPerKEvents} per 1k events/s), rollup p99 ${run.rollupP99Ms} ms, load ${run.loadavg1m}`,
        );
      }
    }
  } finally {
    for (const s of sides) await s.stores.close();
  }
  for (const side of ['empty', 'preloaded'] as const) {
    const runs = out.runs.filter((r) => r.side === side);
    out.medians[side] = {
      ...defined('clickhouseCpuPerKEvents', median(runs.map((r) => r.clickhouseCpuPerKEvents))),
      ...defined('rollupP99Ms', median(runs.map((r) => r.rollupP99Ms))),
      ...defined('eventsP99Ms', median(runs.map((r) => r.eventsP99Ms))),
    };
  }
  const ratio = (k: 'clickhouseCpuPerKEvents' | 'rollupP99Ms' | 'eventsP99Ms') => {
    const a = out.medians.empty[k];
    const b = out.medians.preloaded[k];
    return a === undefined || b === undefined || a === 0 ? undefined : Math.round((b / a) * 100) / 100;
  };
  out.ratios = {
    ...defined('clickhouseCpuPerEvent', ratio('clickhouseCpuPerKEvents')),
    ...defined('rollupP99', ratio('rollupP99Ms')),
    ...defined('eventsP99', ratio('eventsP99Ms')),
  };
  out.ok =
    out.ratios.clickhouseCpuPerEvent !== undefined &&
    out.ratios.rollupP99 !== undefined &&
    out.ratios.clickhouseCpuPerEvent <= PRELOAD_LIMIT &&
    out.ratios.rollupP99 <= PRELOAD_LIMIT;
  return out;
}

/** One batch phase at the fixed rate on one side (side-phase.ts), as this comparison's figures. */
async function phaseOn(
  side: Side<PreloadRun['side']>,
  round: number,
  args: BenchArgs,
  occurredAt: string,
  profileDir: string,
  log: (s: string) => void,
): Promise<Omit<PreloadRun, 'mergeWaitMs'>> {
  const phase = await phaseOnSide(side, round, args, occurredAt, profileDir, log, { eventsPerSec: args.rate });
  const m = phase.meterd;
  const perK = m.eventsPerSec ? Math.round((m.clickhouseCpuPctAvg / (m.eventsPerSec / 1000)) * 100) / 100 : undefined;
  return {
    side: side.name,
    round: round + 1,
    eventsPerSec: m.eventsPerSec,
    clickhouseCpuPct: Math.round(m.clickhouseCpuPctAvg),
    clickhouseCpuPerKEvents: perK,
    rollupP99Ms: phase.freshness?.rollup?.p99Ms,
    eventsP99Ms: phase.freshness?.p99Ms,
    insertMeanMs: phase.serverMetrics?.insertMeanMs,
    loadavg1m: Math.round(loadavg()[0]! * 100) / 100,
    correct: phaseCorrect(phase),
  };
}

export function preloadMarkdown(c: PreloadComparison): string {
  let md = `# meterd benchmark — ${c.preload.toLocaleString('en-US')} events preloaded vs an empty store, one run\n\n`;
  md += `- command: \`${c.command}\`\n- started: ${c.startedAt}\n`;
  md += `- batch at ${c.rateEventsPerSec.toLocaleString('en-US')} events/s for ${c.durationSec} s per phase; preload took ${c.preloadSec} s, its merges settled ${c.preloadMergeWaitSec} s later\n`;
  md += `- correctness: **${c.correct ? 'PASS' : 'FAIL'}**\n\n`;
  md +=
    '| round | store | events/s | ClickHouse CPU % | CH CPU % per 1k events/s | rollup p99 ms | `events` p99 ms | insert mean ms | merge wait ms | load avg |\n';
  md += '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n';
  for (const r of c.runs)
    md += `| ${r.round} | ${r.side} | ${r.eventsPerSec ?? '–'} | ${r.clickhouseCpuPct} | ${r.clickhouseCpuPerKEvents ?? '–'} | ${r.rollupP99Ms ?? '–'} | ${r.eventsP99Ms ?? '–'} | ${r.insertMeanMs ?? '–'} | ${r.mergeWaitMs} | ${r.loadavg1m} |\n`;
  const e = c.medians.empty;
  const p = c.medians.preloaded;
  md += `\nMedians, empty / preloaded: CH CPU per 1k events/s ${e.clickhouseCpuPerKEvents ?? '–'} / ${p.clickhouseCpuPerKEvents ?? '–'} (**${c.ratios.clickhouseCpuPerEvent ?? '–'}×**), rollup p99 ${e.rollupP99Ms ?? '–'} / ${p.rollupP99Ms ?? '–'} ms (**${c.ratios.rollupP99 ?? '–'}×**), \`events\` p99 ${e.eventsP99Ms ?? '–'} / ${p.eventsP99Ms ?? '–'} ms (${c.ratios.eventsP99 ?? '–'}×)\n`;
  md += `\nVerdict: ${c.ok ? `✅ preloaded within ${PRELOAD_LIMIT}× of empty` : `❌ a ratio is over ${PRELOAD_LIMIT}× (or missing)`}\n`;
  return md;
}
