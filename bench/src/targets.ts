import type { LoadSummary } from './load/run-load.js';
import type { PhaseReport } from './run.js';

/** One of the hot-path issue's targets, as measured in this run. */
export interface TargetCheck {
  name: string;
  target: string;
  measured: string;
  pass: boolean | undefined;
}

const fmt = (n: number | undefined, digits = 0) =>
  n === undefined ? 'n/a' : n.toLocaleString('en-US', { maximumFractionDigits: digits });

/**
 * A load generator at or above this share of the CPU it could use is measuring itself, not the
 * server. What it could use is min(its sending threads, cores) × 100 % (GeneratorUse.capacityPct):
 * 100 % for autocannon, one thread; up to every core for wrk, one thread per connection.
 */
export const GENERATOR_BOUND_PCT = 90;

/** Whether a run's generator (its CPU summed over its processes) passed 90 % of its capacity. */
export function isGeneratorBound(s: LoadSummary): boolean {
  // Reports written before the generator's capacity was recorded: autocannon, one core.
  const capacity = s.generator?.capacityPct ?? 100;
  return s.generatorCpuPctAvg >= (GENERATOR_BOUND_PCT / 100) * capacity;
}

/** Runs of a phase whose load generator was the bottleneck, as `name (N % of M %)`. */
export function generatorBound(p: PhaseReport): string[] {
  const runs: [string, LoadSummary | undefined][] = [
    ['meterd', p.meterd],
    ['bare uWS', p.ceiling],
    ['baseline', p.baseline],
  ];
  return runs
    .filter(([, s]) => s !== undefined && isGeneratorBound(s))
    .map(([name, s]) => `${name} (${s!.generatorCpuPctAvg} % of ${s!.generator?.capacityPct ?? 100} %)`);
}

/**
 * The targets of the hot-path issue for this 2-core machine, checked against a phase. A target whose
 * figure was not measured in this run (no comparison, remote target) is listed with pass undefined,
 * and so is a ratio either side of which had its load generator at ≥ 90 % CPU: that ratio measures
 * the generator, not the server.
 */
export function evaluateTargets(p: PhaseReport): TargetCheck[] {
  const out: TargetCheck[] = [];
  const m = p.meterd;
  const add = (
    name: string,
    target: string,
    value: number | undefined,
    ok: (v: number) => boolean,
    digits = 0,
    unit = '',
  ) =>
    out.push({
      name,
      target,
      measured: value === undefined ? 'not measured' : `${fmt(value, digits)}${unit}`,
      pass: value === undefined ? undefined : ok(value),
    });
  const bound = generatorBound(p);
  /** A ratio of meterd to `other` (or to Redis's own rate), judged only when neither side was generator-bound. */
  const ratio = (
    name: string,
    target: string,
    value: number | undefined,
    ok: (v: number) => boolean,
    other?: string,
  ) => {
    const flagged = bound.filter((b) => b.startsWith('meterd ') || (other !== undefined && b.startsWith(`${other} `)));
    if (value === undefined || flagged.length === 0) return add(name, target, value, ok, 2);
    out.push({ name, target, measured: `${fmt(value, 2)} (generator-bound: ${flagged.join(', ')})`, pass: undefined });
  };
  if (p.scenario === 'single') {
    add('p99 latency', '≤ 20 ms', m.latencyMs.p99, (v) => v <= 20, 1, ' ms');
    ratio('meterd ÷ bare uWS', '≥ 0.5', p.ratios.vsCeiling, (v) => v >= 0.5, 'bare uWS');
    ratio('meterd ÷ baseline', '≥ 3', p.ratios.vsBaseline, (v) => v >= 3, 'baseline');
  }
  if (p.scenario === 'batch') {
    add('events/s into ClickHouse', '≥ 100,000', m.eventsPerSec, (v) => v >= 100_000);
    add('p99 latency', '≤ 50 ms', m.latencyMs.p99, (v) => v <= 50, 1, ' ms');
    ratio('meterd events/s ÷ Redis SET NX/s', '≥ 0.5', p.ratios.vsRedisSetNx, (v) => v >= 0.5);
  }
  const v = p.verification;
  add('lost events', '0', v ? v.lost + (p.probeVerification?.lost ?? 0) : undefined, (x) => x === 0);
  add(
    'duplicated events',
    '0',
    v ? v.doubled + v.stray + (p.probeVerification?.doubled ?? 0) : undefined,
    (x) => x === 0,
  );
  if (p.meterVerification) {
    const mv = p.meterVerification;
    out.push({
      name: `meter rollups = raw events (${mv.meters.length} meters)`,
      target: 'exact',
      measured: `${mv.meters.filter((m) => m.ok).length} of ${mv.meters.length} exact`,
      pass: mv.ok,
    });
  }
  add('freshness p99, sent → events table', '≤ 2,000 ms', p.freshness?.p99Ms, (x) => x <= 2_000, 0, ' ms');
  if (p.freshness?.rollup)
    add('freshness p99, sent → hourly rollup', '≤ 2,000 ms', p.freshness.rollup.p99Ms, (x) => x <= 2_000, 0, ' ms');
  if (p.quota)
    add('acknowledged on a free plan', `= ${p.quota.limit}`, p.quota.acknowledged, (x) => x === p.quota!.limit);
  return out;
}
