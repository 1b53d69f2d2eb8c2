import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Sample } from '../src/load/run-load.js';
import { histogramQuantile, soakReport, type Scraped } from '../src/soak.js';

// The soak verdict from synthetic scrapes: 10 minutes at a steady load whose aggregator cycles
// are drawn per minute. Only the cycle times differ between the cases; everything else is flat.
const BOUNDS = [
  0.01,
  0.025,
  0.05,
  0.075,
  0.1,
  0.125,
  0.15,
  0.2,
  0.25,
  0.3,
  0.4,
  0.5,
  0.75,
  1,
  1.5,
  2.5,
  5,
  10,
  Infinity,
];
const START = Date.UTC(2026, 10, 30, 12);
const MINUTES = 10;

/** Scrapes at each minute boundary of a histogram fed with each minute's cycle durations (s). */
function scrapes(cyclesPerMinute: readonly (readonly number[])[]): Scraped[] {
  const cum = new Map(BOUNDS.map((b) => [b, 0]));
  const out: Scraped[] = [{ atMs: START, cycleBuckets: new Map(cum), inserts: 0 }];
  cyclesPerMinute.forEach((cycles, m) => {
    for (const c of cycles) for (const b of BOUNDS) if (c <= b) cum.set(b, cum.get(b)! + 1);
    out.push({ atMs: START + (m + 1) * 60_000, cycleBuckets: new Map(cum), inserts: (m + 1) * 90 });
  });
  return out;
}

const series: Sample[] = Array.from({ length: MINUTES * 60 }, (_, i) => ({
  t: i + 1,
  requests: 100,
  events: 10_000,
  p50Ms: 5,
  p99Ms: 20,
  non2xx: 0,
  serverCpuPct: 50,
  serverRssMb: 200,
  generatorCpuPct: 30,
  redisCpuPct: 10,
  clickhouseCpuPct: 60,
}));
const probes = Array.from({ length: MINUTES * 600 }, (_, i) => ({ sentAt: START + i * 100, lagMs: 900 }));

/** 150 cycles a minute around `typicalS`, plus `slow` long ones (closes, merges, a neighbour). */
function minute(typicalS: number, slow: number, slowS = 0.9): number[] {
  return Array.from({ length: 150 }, (_, i) => (i < slow ? slowS : typicalS * (0.8 + (0.4 * ((i * 37) % 100)) / 100)));
}

const cycleCheck = (cycles: number[][]) => {
  const r = soakReport(scrapes(cycles), START, series, probes, 20_000, 10_000);
  return { report: r, check: r.checks.find((c) => c.metric === 'aggregatorCycleMedianMs')! };
};

test('a few slow cycles in some minutes (no trend) do not fail the cycle check; the mean would have', () => {
  // Minutes alternate between none and 20 slow cycles: the mean swings 2.4×, the median does not move.
  const cycles = Array.from({ length: MINUTES }, (_, m) => minute(0.12, m % 3 === 1 ? 0 : 20));
  cycles[MINUTES - 1] = minute(0.12, 25);
  const { report, check } = cycleCheck(cycles);
  assert.ok(check.ok, JSON.stringify(check));
  assert.ok(report.ok, JSON.stringify(report.checks));
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  assert.ok(mean(cycles[MINUTES - 1]!) / mean(cycles[1]!) > 1.2, 'the case is one a mean-based check fails');
  const last = report.minutes[MINUTES - 1]!;
  assert.ok(last.aggregatorCycleP99Ms! > 3 * last.aggregatorCycleMedianMs!, 'p99 still shows the slow cycles');
});

test('cycles that grow with the run fail the cycle check and the verdict', () => {
  // Every cycle 5 % slower than the minute before: 0.12 s in the second minute, ~0.18 s in the tenth.
  const cycles = Array.from({ length: MINUTES }, (_, m) => minute(0.12 * 1.05 ** (m - 1), 2));
  const { report, check } = cycleCheck(cycles);
  assert.equal(check.ok, false, JSON.stringify(check));
  assert.ok(check.ratio! > 1.3 && check.ratio! < 1.7, JSON.stringify(check));
  assert.equal(report.ok, false);
});

test('histogramQuantile interpolates within the bucket, and reports the last finite bound past it', () => {
  const b: [number, number][] = [
    [0.1, 0],
    [0.2, 100],
    [1, 100],
    [Infinity, 101],
  ];
  assert.equal(histogramQuantile(b, 0.5), 0.1 + 0.1 * (50.5 / 100));
  assert.equal(histogramQuantile(b, 1), 1);
  assert.equal(histogramQuantile([[Infinity, 0]], 0.5), undefined);
});
