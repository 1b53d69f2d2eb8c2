import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { LoadSummary } from '../src/load/run-load.js';
import type { PhaseReport } from '../src/run.js';
import { evaluateTargets, generatorBound } from '../src/targets.js';
import { renderMarkdown } from '../src/report/markdown.js';

function summary(label: string, perSec: number, generatorCpuPctAvg: number): LoadSummary {
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
    redisCpuPctAvg: 10,
    clickhouseCpuPctAvg: 10,
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
  assert.deepEqual(generatorBound(p), ['bare uWS (98 %)']);
  const t = evaluateTargets(p);
  const vsCeiling = t.find((x) => x.name === 'meterd ÷ bare uWS')!;
  assert.equal(vsCeiling.pass, undefined);
  assert.match(vsCeiling.measured, /generator-bound: bare uWS \(98 %\)/);
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
  assert.match(md, /\*\*Generator-bound:\*\*.*bare uWS \(98 %\)/);
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
