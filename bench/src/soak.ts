import { AGGREGATOR_METRICS, INGEST_METRICS } from '@meterd/core/contracts';
import { sumOf, type Sample as PromSample } from '@meterd/core/metrics';
import type { Sample } from './load/run-load.js';
import { scrape } from './verify/server-metrics.js';

/**
 * The soak scenario's per-minute account: does anything grow with time at a steady load? Batch
 * requests at half the peak rate the same run measured first, for `--duration` (default 10 min).
 * Each minute: aggregator cycle time (median and p99 of the minute's cycles, from its /metrics
 * histogram), ClickHouse server CPU, rollup freshness p99 of the probes sent in that minute, ingest
 * RSS, and ingest's events inserts per second (every thread's shipper; the insert-shape bound is 2
 * per process per table).
 *
 * The cycle check uses the median: a minute's mean or p99 is set by its few longest cycles (an
 * hour closing, a merge or a neighbour's burst on this shared machine swung the mean 121–335 ms
 * with no trend), while growth with history slows every cycle, and so moves the median.
 */
export interface SoakMinute {
  minute: number;
  eventsPerSec: number;
  aggregatorCycleMedianMs: number | undefined;
  aggregatorCycleP99Ms: number | undefined;
  clickhouseCpuPct: number;
  rollupFreshnessP99Ms: number | undefined;
  ingestRssMb: number;
  eventsInsertsPerSec: number | undefined;
}

export interface SoakCheck {
  metric: string;
  second: number | undefined;
  last: number | undefined;
  ratio: number | undefined;
  ok: boolean;
}

export interface SoakReport {
  peakEventsPerSec: number;
  rateEventsPerSec: number;
  minutes: SoakMinute[];
  /** Last minute within 1.2× of the second, per metric; inserts per second ≤ 2 every minute. */
  checks: SoakCheck[];
  ok: boolean;
}

/** The growth allowed from the second minute to the last. */
export const SOAK_GROWTH_LIMIT = 1.2;
/** ClickHouse's guidance is about one insert per second per table; ingest is allowed two. */
export const MAX_INSERTS_PER_SEC = 2;

/** One scrape of the counters the soak reads. */
export interface Scraped {
  atMs: number;
  /** The aggregator's cycle-time histogram: cumulative count per upper bound (s), +Inf included. */
  cycleBuckets: ReadonlyMap<number, number>;
  inserts: number;
}

/** Scrapes the aggregator's and ingest's counters once a minute (and at start and stop). */
export class SoakRecorder {
  /** Every scrape so far, in time order: soakReport folds them into minutes. */
  readonly scrapes: Scraped[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly aggregatorUrl: string | undefined,
    private readonly ingestUrl: string,
  ) {}

  async start(): Promise<void> {
    await this.take();
    this.timer = setInterval(() => void this.take(), 60_000);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.take();
  }

  private async take(): Promise<void> {
    const atMs = Date.now();
    const [agg, ing] = await Promise.all([
      this.aggregatorUrl === undefined ? undefined : scrape(this.aggregatorUrl),
      scrape(this.ingestUrl),
    ]);
    this.scrapes.push({
      atMs,
      cycleBuckets: cycleBucketsOf(agg ?? []),
      inserts: ing ? sumOf(ing, `${INGEST_METRICS.shipSeconds}_count`) : NaN,
    });
  }
}

/** The soak's account (see SoakReport): the scrapes, the load's per-second samples and the probes in minutes from `startMs`. */
export function soakReport(
  scrapes: readonly Scraped[],
  startMs: number,
  series: readonly Sample[],
  probes: readonly { sentAt: number; lagMs: number }[],
  peak: number,
  rate: number,
): SoakReport {
  const nearest = (ms: number): Scraped | undefined => {
    let best: Scraped | undefined;
    for (const s of scrapes) if (best === undefined || Math.abs(s.atMs - ms) < Math.abs(best.atMs - ms)) best = s;
    return best;
  };
  const minutes: SoakMinute[] = [];
  const count = Math.floor((series[series.length - 1]?.t ?? 0) / 60);
  for (let m = 0; m < count; m++) {
    const secs = series.filter((s) => s.t > m * 60 && s.t <= (m + 1) * 60);
    const lags = probes
      .filter((p) => p.sentAt >= startMs + m * 60_000 && p.sentAt < startMs + (m + 1) * 60_000)
      .map((p) => p.lagMs)
      .sort((a, b) => a - b);
    const from = nearest(startMs + m * 60_000);
    const to = nearest(startMs + (m + 1) * 60_000);
    const cycles = to && from && to !== from ? bucketDelta(from.cycleBuckets, to.cycleBuckets) : [];
    const dInserts = to && from ? to.inserts - from.inserts : NaN;
    const span = to && from ? (to.atMs - from.atMs) / 1000 : NaN;
    minutes.push({
      minute: m + 1,
      eventsPerSec: Math.round(avg(secs.map((s) => s.events))),
      aggregatorCycleMedianMs: msOf(histogramQuantile(cycles, 0.5)),
      aggregatorCycleP99Ms: msOf(histogramQuantile(cycles, 0.99)),
      clickhouseCpuPct: Math.round(avg(secs.map((s) => s.clickhouseCpuPct))),
      rollupFreshnessP99Ms:
        lags.length === 0 ? undefined : lags[Math.min(lags.length - 1, Math.floor(0.99 * lags.length))],
      ingestRssMb: Math.max(0, ...secs.map((s) => s.serverRssMb)),
      eventsInsertsPerSec: Number.isFinite(dInserts) && span > 0 ? round1(dInserts / span) : undefined,
    });
  }
  const checks: SoakCheck[] = [];
  const second = minutes[1];
  const last = minutes[minutes.length - 1];
  for (const metric of [
    'aggregatorCycleMedianMs',
    'clickhouseCpuPct',
    'rollupFreshnessP99Ms',
    'ingestRssMb',
  ] as const) {
    const a = second?.[metric];
    const b = last?.[metric];
    const ratio = a === undefined || b === undefined || a === 0 ? undefined : Math.round((b / a) * 100) / 100;
    checks.push({ metric, second: a, last: b, ratio, ok: ratio !== undefined && ratio <= SOAK_GROWTH_LIMIT });
  }
  const inserts = minutes.map((m) => m.eventsInsertsPerSec).filter((x): x is number => x !== undefined);
  const maxInserts = inserts.length === 0 ? undefined : Math.max(...inserts);
  checks.push({
    metric: `eventsInsertsPerSec (max of the minutes, ≤ ${MAX_INSERTS_PER_SEC})`,
    second: second?.eventsInsertsPerSec,
    last: maxInserts,
    ratio: undefined,
    ok: maxInserts !== undefined && maxInserts <= MAX_INSERTS_PER_SEC,
  });
  return {
    peakEventsPerSec: peak,
    rateEventsPerSec: rate,
    minutes,
    checks,
    ok: minutes.length >= 2 && checks.every((c) => c.ok),
  };
}

/** The aggregator's cycle-time histogram in a /metrics scrape: cumulative count per upper bound (s). */
export function cycleBucketsOf(samples: readonly PromSample[]): Map<number, number> {
  const out = new Map<number, number>();
  for (const s of samples)
    if (s.name === `${AGGREGATOR_METRICS.cycleSeconds}_bucket`)
      out.set(Number(s.labels.le), (out.get(Number(s.labels.le)) ?? 0) + s.value);
  return out;
}

/** Cycles per bucket between two scrapes: [upper bound (s), cumulative count], ascending. */
export function bucketDelta(from: ReadonlyMap<number, number>, to: ReadonlyMap<number, number>): [number, number][] {
  return [...to].map(([le, c]): [number, number] => [le, c - (from.get(le) ?? 0)]).sort((a, b) => a[0] - b[0]);
}

/**
 * The q-quantile of a cumulative histogram, as Prometheus' histogram_quantile computes it: linear
 * within the bucket it falls in (from the previous bound, 0 for the first); in the +Inf bucket, the
 * highest finite bound. Undefined when the histogram is empty.
 */
export function histogramQuantile(buckets: readonly [number, number][], q: number): number | undefined {
  const total = buckets[buckets.length - 1]?.[1] ?? 0;
  if (total <= 0) return undefined;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (le === Infinity) return prevLe;
      return prevLe + ((le - prevLe) * (rank - prevCount)) / Math.max(1, count - prevCount);
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}

const msOf = (s: number | undefined): number | undefined => (s === undefined ? undefined : round1(s * 1000));

export function soakMarkdown(s: SoakReport): string {
  let md = `\n**Soak** at ${s.rateEventsPerSec.toLocaleString('en-US')} events/s (half the peak of ${s.peakEventsPerSec.toLocaleString('en-US')} measured first)\n\n`;
  md +=
    '| minute | events/s | aggregator cycle median / p99 ms | ClickHouse CPU % | rollup freshness p99 ms | ingest RSS MB | events inserts/s |\n';
  md += '|---:|---:|---:|---:|---:|---:|---:|\n';
  for (const m of s.minutes) {
    md += `| ${m.minute} | ${m.eventsPerSec} | ${m.aggregatorCycleMedianMs ?? '–'} / ${m.aggregatorCycleP99Ms ?? '–'} | ${m.clickhouseCpuPct} | ${m.rollupFreshnessP99Ms ?? '–'} | ${m.ingestRssMb} | ${m.eventsInsertsPerSec ?? '–'} |\n`;
  }
  md += `\n| check | second minute | last minute | ratio | |\n|---|---:|---:|---:|---|\n`;
  for (const c of s.checks)
    md += `| ${c.metric} | ${c.second ?? '–'} | ${c.last ?? '–'} | ${c.ratio ?? '–'} | ${c.ok ? '✅' : '❌'} |\n`;
  md += `\nSoak verdict: ${s.ok ? '✅ nothing grew by more than 1.2× from the second minute to the last' : '❌ see the checks above'}\n`;
  return md;
}

const avg = (xs: readonly number[]): number => (xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length);
const round1 = (x: number): number => Math.round(x * 10) / 10;
