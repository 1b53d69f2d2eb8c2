import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generatorUse, type LoadSummary } from '../src/load/sampler.js';
import type { PhaseReport } from '../src/run.js';
import { evaluateTargets, generatorBound, isGeneratorBound } from '../src/targets.js';
import { renderMarkdown } from '../src/report/markdown.js';

function summary(
  label: string,
  perSec: number,
  generatorCpuPctAvg: number,
  generator = generatorUse('autocannon', 1, 1, generatorCpuPctAvg, perSec * 10, 10, 2),
): LoadSummary {
  return {
    label,
    durationSec: 10,
    connections: 100,
    requests: perSec * 10,
    requestsPerSec: perSec,
    eventsPerSec: perSec,
    latencyMs: { p50: 3, p90: 8, p99: 12, max: 30, mean: 4 },
    statusCounts: { '202': perSec * 10 },
    errors: 0,
    timeouts: 0,
    server: { pid: 1, cpuPctAvg: 80, rssMbMax: 100 },
    generatorCpuPctAvg,
    generator,
    redisCpuPctAvg: 10,
    clickhouseCpuPctAvg: 10,
    otherCpuPctAvg: {},
    series: [],
  };
}

function single(meterdGen: number, ceilingGen: number): PhaseReport {
  return {
    scenario: 'single',
    describe: 'one event per request',
    meterd: summary('meterd', 6_000, meterdGen),
    ceiling: summary('ceiling', 10_000, ceilingGen),
    baseline: summary('baseline', 1_500, 60),
    answers: { stored: 60_000, duplicate: 0, rejected: 0 },
    ratios: { vsCeiling: 0.6, vsBaseline: 4 },
    targets: [],
  };
}

test('a ratio against a run whose load generator was at ≥ 90 % CPU is flagged, not judged', () => {
  const p = single(40, 98);
  assert.deepEqual(generatorBound(p), ['bare uWS (98 % of 100 %)']);
  const t = evaluateTargets(p);
  const vsCeiling = t.find((x) => x.name === 'meterd ÷ bare uWS')!;
  assert.equal(vsCeiling.pass, undefined);
  assert.match(vsCeiling.measured, /generator-bound: bare uWS \(98 % of 100 %\)/);
  // The baseline's generator was not the bottleneck: that ratio is the server's and is judged.
  assert.equal(t.find((x) => x.name === 'meterd ÷ baseline')!.pass, true);
  p.targets = t;
  const md = renderMarkdown({
    startedAt: '',
    command: 'bench',
    mode: 'self-started',
    target: '',
    ingestThreads: 2,
    ingestEnv: {},
    aggregator: { running: false, note: 'none' },
    machine: { cores: 2, loadavg1mAtStart: 0, node: 'v20' },
    phases: [p],
    correct: true,
  });
  assert.match(md, /\*\*Generator-bound:\*\*.*bare uWS \(98 % of 100 %\)/);
});

test('a generator-bound meterd run flags every ratio of the phase; an unbound run judges them all', () => {
  const bound = evaluateTargets(single(95, 50)).filter((x) => x.name.startsWith('meterd ÷'));
  assert.ok(bound.every((x) => x.pass === undefined));
  const free = evaluateTargets(single(50, 50)).filter((x) => x.name.startsWith('meterd ÷'));
  assert.deepEqual(
    free.map((x) => x.pass),
    [true, true],
  );
});

test("wrk's capacity is its threads capped by the cores: bound past 90 % of that, summed over its threads", () => {
  // wrk, 100 threads on 2 cores: it could use 200 %; 120 % leaves it room, 185 % does not.
  const wrk = (cpu: number) => summary('ceiling', 10_000, cpu, generatorUse('wrk', 1, 100, cpu, 100_000, 10, 2));
  assert.equal(isGeneratorBound(wrk(120)), false);
  assert.equal(isGeneratorBound(wrk(185)), true);
  const p = single(40, 0);
  p.ceiling = wrk(185);
  assert.deepEqual(generatorBound(p), ['bare uWS (185 % of 200 %)']);
  assert.equal(evaluateTargets(p).find((x) => x.name === 'meterd ÷ bare uWS')!.pass, undefined);
  // One wrk thread on a 2-core machine can use one core only.
  assert.equal(generatorUse('wrk', 1, 1, 95, 1_000, 10, 2).capacityPct, 100);
  // A report from before capacities were recorded: autocannon, one core.
  const old = summary('old', 1_000, 92);
  delete (old as Partial<LoadSummary>).generator;
  assert.equal(isGeneratorBound(old), true);
});

test('requests per generator CPU-second: requests ÷ (CPU share × seconds)', () => {
  assert.equal(generatorUse('wrk', 1, 4, 50, 100_000, 10, 2).requestsPerCpuSec, 20_000);
  assert.equal(generatorUse('autocannon', 1, 1, 0, 100, 10, 2).requestsPerCpuSec, undefined);
});
