import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generatorUse, type LoadSummary } from '../src/load/sampler.js';
import { ceilingOf, processCosts, stageMarkdown, stageTable, type StageCeiling } from '../src/stages/table.js';

/** A pipeline run at `events`/s with these CPU shares (percent of one core). */
function pipeline(
  events: number,
  cpu: { ingest: number; redis: number; clickhouse: number; gen: number },
): LoadSummary {
  return {
    label: 'meterd batch',
    durationSec: 10,
    connections: 16,
    requests: events / 10,
    requestsPerSec: events / 100,
    eventsPerSec: events,
    latencyMs: { p50: 10, p90: 20, p99: 30, max: 40, mean: 12 },
    statusCounts: {},
    errors: 0,
    timeouts: 0,
    server: { pid: 1, cpuPctAvg: cpu.ingest, rssMbMax: 100 },
    generatorCpuPctAvg: cpu.gen,
    generator: generatorUse('wrk', 1, 16, cpu.gen, events / 10, 10, 2),
    redisCpuPctAvg: cpu.redis,
    clickhouseCpuPctAvg: cpu.clickhouse,
    otherCpuPctAvg: { aggregator: 5 },
    series: [],
  };
}

const stages: StageCeiling[] = [
  { stage: 'HTTP', how: 'bare uWS', eventsPerSec: 400_000, cpu: { process: 'uWS', pct: 50, capacityPct: 200 } },
  { stage: 'Redis', how: 'claims', eventsPerSec: 6_000, cpu: { process: 'Redis', pct: 50, capacityPct: 100 } },
  { stage: 'spool', how: 'always', eventsPerSec: 300_000 },
];

test('a CPU-bound stage measured at part of its CPU is scaled to full use; a disk-bound one is not', () => {
  assert.equal(ceilingOf(stages[0]!), 1_600_000);
  assert.equal(ceilingOf(stages[1]!), 12_000);
  assert.equal(ceilingOf(stages[2]!), 300_000);
  // Above its capacity (a shared server's CPU includes others' work): capped, never scaled down.
  assert.equal(
    ceilingOf({ stage: 'x', how: '', eventsPerSec: 100, cpu: { process: 'R', pct: 130, capacityPct: 100 } }),
    100,
  );
});

test('CPU per event per process, less the shared servers’ background', () => {
  const costs = processCosts(pipeline(10_000, { ingest: 150, redis: 30, clickhouse: 40, gen: 10 }), {
    redis: 10,
    clickhouse: 20,
  });
  const us = Object.fromEntries(costs.map((c) => [c.process, c.usPerEvent]));
  assert.deepEqual(us, { ingest: 150, redis: 20, clickhouse: 20, aggregator: 5, generator: 10 });
  assert.deepEqual(
    processCosts({ ...pipeline(0, { ingest: 1, redis: 1, clickhouse: 1, gen: 1 }), eventsPerSec: 0 }),
    [],
  );
});

test('the binding stage is the lowest ceiling, the CPU ceiling included; a target above it is unreachable', () => {
  // Server side: 150 + 20 + 20 + 5 = 195 µs per event → 2 cores give 10,256 events/s: below Redis's 12,000.
  const t = stageTable(
    'batch',
    pipeline(10_000, { ingest: 150, redis: 30, clickhouse: 40, gen: 10 }),
    stages,
    100_000,
    2,
    {
      redis: 10,
      clickhouse: 20,
    },
  );
  assert.equal(t.serverUsPerEvent, 195);
  assert.equal(t.cpuCeiling, 10_256);
  assert.equal(t.cpuCeilingWithGenerator, 9_756);
  assert.match(t.binding, /^CPU/);
  assert.equal(t.reachable, false);
  assert.deepEqual(
    t.rows.filter((r) => r.binding).map((r) => r.stage),
    [t.binding],
  );
  assert.deepEqual(
    t.rows.filter((r) => !r.belowTarget).map((r) => r.stage),
    ['HTTP', 'spool'],
  );
  // A cheaper pipeline moves the bind to Redis; a target under every ceiling is reachable.
  const cheap = stageTable(
    'batch',
    pipeline(10_000, { ingest: 30, redis: 10, clickhouse: 10, gen: 5 }),
    stages,
    5_000,
    2,
  );
  assert.equal(cheap.binding, 'Redis');
  assert.equal(cheap.reachable, true);
  const md = stageMarkdown(t);
  assert.match(md, /\| Redis \| 6,000 \| Redis 50 % of 100 % \| 12,000 \|/);
  assert.match(md, /Binding stage: \*\*CPU: 2 cores/);
  assert.match(md, /\*\*is above\*\*/);
});
