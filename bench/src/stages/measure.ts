import { availableParallelism } from 'node:os';
import { createRedis } from '@meterd/core/store';
import { connectionsFor, type BenchArgs, type Generator } from '../args.js';
import { freePort, startChild } from '../children/child.js';
import { generate } from '../load/generate.js';
import { storeMeter, type LoadSummary } from '../load/sampler.js';
import { selfCpuSeconds } from '../load/procstat.js';
import { BATCH_SIZE, buildWorkload, type Tenant } from '../load/workloads.js';
import type { BenchStores } from '../stack/stores.js';
import { run as validateMicro } from '../../micro/validate.js';
import { run as spoolMicro } from '../../micro/spool.js';
import { run as insertMicro } from '../../micro/insert-format.js';
import { measureClaims } from './redis-claim.js';
import { stageTable, type StageCeiling, type StageTable } from './table.js';

/** Seconds each HTTP stage run lasts: long enough for a steady rate, short on a shared machine. */
const HTTP_STAGE_SEC = 8;
const BACKGROUND_MS = 3_000;

/** Redis's and ClickHouse's CPU over `ms` while this run sends nothing (other users, merges). */
async function backgroundCpu(ms: number): Promise<Record<string, number>> {
  const meters = [storeMeter('redis-server'), storeMeter('clickhouse-serv')];
  await new Promise((r) => setTimeout(r, ms));
  const [redis, clickhouse] = meters.map((m) => Math.round(m.sample()));
  return { redis: redis!, clickhouse: clickhouse! };
}

export interface StagesInput {
  args: BenchArgs;
  stores: BenchStores;
  scenario: 'single' | 'batch';
  tag: string;
  tenant: Tenant;
  occurredAt: string;
  /** The full pipeline's run (meterd) and the events per group commit ingest formed in it. */
  pipeline: LoadSummary;
  eventsPerCommit: number | undefined;
  log: (s: string) => void;
  progress?: NodeJS.WriteStream;
}

export interface StagesReport {
  table: StageTable;
  /** CPU % of the shared servers with none of this run's load, subtracted from the pipeline's costs. */
  background: Record<string, number>;
  /** The bare-uWS stage under each generator: which one sends more requests per CPU-second. */
  generators: LoadSummary[];
}

/**
 * Each stage of the hot path alone, in the scenario's shape, one after the other on the same
 * machine as the pipeline run: HTTP (bare uWS, with wrk and with autocannon), JSON.parse + core's
 * validation, ingest's Redis claim + commit, the spool's append + fdatasync, ClickHouse's insert
 * CPU; then which one binds (table.ts).
 */
export async function runStages(s: StagesInput): Promise<StagesReport> {
  const cores = availableParallelism();
  const threads = s.args.threads;
  const stages: StageCeiling[] = [];
  s.log(`bench: stage — the shared Redis and ClickHouse servers' background CPU (${BACKGROUND_MS / 1000} s, no load)`);
  const background = await backgroundCpu(BACKGROUND_MS);

  s.log('bench: stage — bare uWS (HTTP parse + respond), wrk then autocannon');
  const generators: LoadSummary[] = [];
  for (const g of ['wrk', 'autocannon'] as const satisfies readonly Generator[]) {
    if (g === 'wrk' && s.args.generator !== 'wrk') continue;
    generators.push(await bareUws(s, g));
  }
  for (const h of generators)
    stages.push({
      stage: `HTTP: bare uWS, ${threads} threads (${h.generator.tool})`,
      eventsPerSec: (s.scenario === 'single' ? h.requestsPerSec : h.eventsPerSec) ?? 0,
      how: `${h.connections} connections, ${s.scenario === 'batch' ? `${BATCH_SIZE} events per request` : 'one event per request'}; ${h.generator.tool} at ${h.generator.cpuPctAvg} % of ${h.generator.capacityPct} %`,
      ...(h.server.cpuPctAvg === undefined
        ? {}
        : { cpu: { process: 'uWS', pct: h.server.cpuPctAvg, capacityPct: Math.min(threads, cores) * 100 } }),
    });

  s.log('bench: stage — JSON.parse + validateMeterEvent (bench/micro/validate)');
  // The micro times by the wall clock: on a shared machine this thread gets part of a core, so
  // its CPU share over the run scales the rate to a whole core (ceilingOf).
  const cpu0 = selfCpuSeconds();
  const wall0 = performance.now();
  const v = validateMicro();
  const validateCpuPct = ((selfCpuSeconds() - cpu0) / ((performance.now() - wall0) / 1000)) * 100;
  const ns = (name: string) => v.find((r) => r.name === name)?.nsPerOp ?? NaN;
  const perEventNs =
    s.scenario === 'batch'
      ? ns('JSON.parse + validate, per event of a 100-event batch')
      : ns('JSON.parse(one event)') +
        ns('validateMeterEvent (with occurred_at)') +
        ns('hashKey (SHA-256 of the API key)');
  const k = Math.min(threads, cores);
  stages.push({
    stage: `validation: JSON.parse + validate, ${k} threads`,
    how: `bench/micro/validate: ${Math.round(perEventNs)} ns per event by the wall clock on one thread${s.scenario === 'single' ? ' (with the API key hash per request)' : ''}, × ${k} threads`,
    eventsPerSec: Math.round((1e9 / perEventNs) * k),
    cpu: { process: 'bench', pct: Math.round(validateCpuPct * k), capacityPct: 100 * k },
  });

  const groupSize = Math.max(1, Math.round(s.eventsPerCommit ?? (s.scenario === 'batch' ? BATCH_SIZE : 10)));
  s.log(`bench: stage — Redis claim + commit Lua, groups of ${groupSize} keys`);
  const claims = await measureClaims(() => createRedis(s.stores.cfg.REDIS_URL), s.tenant.workspaceId, {
    groupSize,
    lanes: threads,
    depth: 4,
    ms: 5_000,
  });
  stages.push({
    stage: 'Redis: claim + commit scripts',
    how: `ingest's RedisDeduper, groups of ${groupSize} keys (the pipeline's events per group commit), ${claims.lanes} connections × ${claims.depth} in flight`,
    eventsPerSec: claims.eventsPerSec,
    // Redis runs the scripts on one core; its CPU includes other users of a shared server.
    cpu: { process: 'Redis', pct: claims.redisCpuPct, capacityPct: 100 },
  });

  s.log('bench: stage — spool append + fdatasync (bench/micro/spool)');
  const spool = await spoolMicro({ ms: 2_000 });
  for (const mode of ['always', 'interval'] as const) {
    const r = spool.find((x) => x.mode === mode && x.rows === (s.scenario === 'batch' ? BATCH_SIZE : 1));
    if (r)
      stages.push({
        stage: `spool: append + ${mode === 'always' ? 'fdatasync before the ack' : 'fdatasync every 100 ms'}`,
        how: `SPOOL_FSYNC=${mode}, ${r.clients} closed-loop appenders × ${r.rows} rows, one writer (ingest has one per thread)`,
        eventsPerSec: r.rowsPerSec,
      });
  }

  s.log('bench: stage — ClickHouse RowBinary insert CPU (bench/micro/insert-format)');
  const ch = (await insertMicro({ batch: 20_000, batches: 3, rounds: 1 })).find((f) => f.format === 'RowBinary');
  if (ch && ch.queryCpuNsPerRow > 0)
    stages.push({
      stage: 'ClickHouse: events insert, one core',
      how: `RowBinary, 20,000-row inserts: ${Math.round(ch.queryCpuNsPerRow)} ns of the insert query's CPU per row (query_log)`,
      eventsPerSec: Math.round(1e9 / ch.queryCpuNsPerRow),
    });

  // The issue's targets: batch 100k events/s; single at least half the bare-uWS rate (req/s).
  const target = s.scenario === 'batch' ? 100_000 : Math.round(0.5 * (stages[0]?.eventsPerSec ?? 0));
  return { table: stageTable(s.scenario, s.pipeline, stages, target, cores, background), background, generators };
}

/** The bare uWS child under the scenario's load for HTTP_STAGE_SEC, with one generator. */
async function bareUws(s: StagesInput, generator: Generator): Promise<LoadSummary> {
  const port = await freePort();
  const child = await startChild(
    'ceiling',
    new URL('../children/uws-drop.js', import.meta.url).pathname,
    { PORT: String(port), THREADS: String(s.args.threads) },
    port,
  );
  try {
    return await generate(generator, {
      label: `stage bare uWS ${s.scenario} (${generator})`,
      url: child.url,
      connections: connectionsFor(s.args, s.scenario),
      durationSec: HTTP_STAGE_SEC,
      work: buildWorkload(s.scenario, `${s.tag}u${generator[0]}`, [s.tenant], s.occurredAt),
      serverPid: child.pid,
      ...(s.progress ? { progress: s.progress } : {}),
    });
  } finally {
    await child.stop();
  }
}
