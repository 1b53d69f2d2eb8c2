import type { PhaseReport } from './run.js';

/** One of issue 7's targets, as measured in this run. */
export interface TargetCheck {
  name: string;
  target: string;
  measured: string;
  pass: boolean | undefined;
}

const fmt = (n: number | undefined, digits = 0) =>
  n === undefined ? 'n/a' : n.toLocaleString('en-US', { maximumFractionDigits: digits });

/**
 * The targets of the bench issue for this 2-core machine, checked against a phase. A target whose
 * figure was not measured in this run (no comparison, remote target) is listed with pass undefined.
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
  if (p.scenario === 'single') {
    add('requests/s', '≥ 40,000', m.requestsPerSec, (v) => v >= 40_000);
    add('p99 latency', '≤ 10 ms', m.latencyMs.p99, (v) => v <= 10, 1, ' ms');
    add('meterd ÷ bare uWS', '≥ 0.5', p.ratios.vsCeiling, (v) => v >= 0.5, 2);
    add('meterd ÷ baseline', '≥ 1.5', p.ratios.vsBaseline, (v) => v >= 1.5, 2);
  }
  if (p.scenario === 'batch') {
    add('events/s into ClickHouse', '≥ 250,000', m.eventsPerSec, (v) => v >= 250_000);
    add('p99 latency', '≤ 50 ms', m.latencyMs.p99, (v) => v <= 50, 1, ' ms');
    add('meterd events/s ÷ Redis SET NX/s', '≥ 0.5', p.ratios.vsRedisSetNx, (v) => v >= 0.5, 2);
  }
  const v = p.verification;
  add('lost events', '0', v ? v.lost + (p.probeVerification?.lost ?? 0) : undefined, (x) => x === 0);
  add(
    'duplicated events',
    '0',
    v ? v.doubled + v.stray + (p.probeVerification?.doubled ?? 0) : undefined,
    (x) => x === 0,
  );
  add('freshness p99, sent → events table', '≤ 2,000 ms', p.freshness?.p99Ms, (x) => x <= 2_000, 0, ' ms');
  if (p.freshness?.rollup)
    add('freshness p99, sent → hourly rollup', '≤ 2,000 ms', p.freshness.rollup.p99Ms, (x) => x <= 2_000, 0, ' ms');
  if (p.quota)
    add('acknowledged on a free plan', `= ${p.quota.limit}`, p.quota.acknowledged, (x) => x === p.quota!.limit);
  return out;
}
