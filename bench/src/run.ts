import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { clickHouseFromConfig, ident } from '@meterd/core/clickhouse';
import { loadConfig, storeVars } from '@meterd/core/config';
import { CH_TABLES } from '@meterd/core/contracts';
import { formatRfc3339 } from '@meterd/core/event';
import { PLAN_QUOTAS } from '@meterd/core/plans';
import { REPO_ROOT } from '@meterd/core/testing';
import { connectionsFor, type BenchArgs, type Generator, type Scenario } from './args.js';
import { BenchError } from './errors.js';
import { freePort, startChild, type Child } from './children/child.js';
import { redisSetNxRate, type RedisRate } from './children/redis-rate.js';
import { generate } from './load/generate.js';
import type { LoadSummary } from './load/run-load.js';
import { BATCH_SIZE, buildWorkload, type AckCounters, type Tenant } from './load/workloads.js';
import { preflight, recoveryDone, warmUp } from './preflight.js';
import { summariseProfiles, type ProfileTop } from './report/profile.js';
import { openBenchStores, type BenchStores } from './stack/stores.js';
import { markWorkspaceKnown, preloadEvents, waitForMerges } from './stack/preload.js';
import { SoakRecorder, bucketDelta, soakReport, cycleBucketsOf, histogramQuantile, type SoakReport } from './soak.js';
import { verifyKeys, type Verification } from './verify/clickhouse.js';
import { verifyMeters, type MeterVerification } from './verify/meters.js';
import { defineBenchMeters } from './stack/meters.js';
import type { MeterDefinition } from '@meterd/core/meters';
import { FreshnessProbe, type Freshness } from './verify/freshness.js';
import { waitForSpool } from './verify/spool.js';
import { diff, scrape, type ServerMetrics } from './verify/server-metrics.js';
import { evaluateTargets, type TargetCheck } from './targets.js';
import { runStages, type StagesReport } from './stages/measure.js';

export interface PhaseReport {
  scenario: Scenario;
  describe: string;
  meterd: LoadSummary;
  /** Events as the load generator read them from meterd's answers. */
  answers: AckCounters;
  verification?: Verification;
  probeVerification?: Verification;
  /** --meters: the meters' rollups against the raw events of the bench workspace (exact). */
  meterVerification?: MeterVerification;
  freshness?: Freshness;
  spoolDrainMs?: number;
  /** From ingest's /metrics over the load (absent when the target exposes none). */
  serverMetrics?: ServerMetrics;
  quota?: { limit: number; acknowledged: number; ok: boolean };
  soak?: SoakReport;
  /** The aggregator's cycles during the load (its /metrics histogram): how much of rollup freshness it adds. */
  aggregatorCycles?: { count: number; medianMs: number | undefined; p99Ms: number | undefined };
  ceiling?: LoadSummary;
  baseline?: LoadSummary;
  baselineVerification?: Verification;
  redisSetNx?: RedisRate;
  ratios: { vsCeiling?: number; vsBaseline?: number; vsRedisSetNx?: number };
  targets: TargetCheck[];
}

export interface BenchReport {
  startedAt: string;
  command: string;
  mode: 'self-started' | 'target';
  target: string;
  ingestThreads: number | undefined;
  ingestEnv: Record<string, string>;
  /** The aggregator the bench started for rollup freshness, or why there is none. */
  aggregator: { running: boolean; note: string };
  machine: { cores: number; loadavg1mAtStart: number; node: string };
  /** The load generator chosen (fixed-rate runs use autocannon: each run's summary names its tool). */
  generator?: Generator;
  phases: PhaseReport[];
  /** --stages: each stage of the hot path alone after the phase, and which one binds. */
  stages?: StagesReport;
  profile?: ProfileTop;
  /** Every verification passed (nothing lost, doubled or stored against a refusal). */
  correct: boolean;
}

const INGEST_MAIN = join(REPO_ROOT, 'ingest/dist/src/main.js');
const AGGREGATOR_MAIN = join(REPO_ROOT, 'aggregator/dist/src/main.js');
export const ROLLUP_TABLE = CH_TABLES.usageHourly;
/** Length of the soak scenario's unlimited run that sets its rate. */
const SOAK_PEAK_SEC = 15;
const CHILDREN = new URL('./children/', import.meta.url);

export interface RunOptions {
  args: BenchArgs;
  command: string;
  progress?: NodeJS.WriteStream;
  /** Where --cpu-prof profiles go. */
  profileDir: string;
}

/** Runs every phase of one bench invocation and returns the report (nothing written to disk here). */
export async function runBench(o: RunOptions): Promise<BenchReport> {
  const { args } = o;
  const report: BenchReport = {
    startedAt: new Date().toISOString(),
    command: o.command,
    mode: args.target === undefined ? 'self-started' : 'target',
    target: args.target ?? '',
    ingestThreads: args.target === undefined ? args.threads : undefined,
    ingestEnv: args.ingestEnv,
    aggregator: { running: false, note: 'not started (runs only with the self-started stack)' },
    machine: {
      cores: availableParallelism(),
      loadavg1mAtStart: Math.round(loadavg()[0]! * 100) / 100,
      node: process.version,
    },
    generator: args.generator,
    phases: [],
    correct: true,
  };
  const occurredAt = formatRfc3339(Date.now());
  let stores: BenchStores | undefined;
  let ingest: Child | undefined;
  let aggregator: Child | undefined;
  let remoteCh: BenchStores['clickhouse'] | undefined;
  let spoolDir: string | undefined;
  let meters: MeterDefinition[] | undefined;
  const log = (s: string) => o.progress?.write(`${s}\n`);
  try {
    let base: string;
    let mainTenant: Tenant;
    if (args.target === undefined) {
      const ingestMain = args.ingestMain ?? INGEST_MAIN;
      if (!existsSync(ingestMain))
        throw new BenchError(
          'METERD_BENCH_NOT_BUILT',
          `${ingestMain} is missing: build ingest first (npx tsc -b ingest)`,
        );
      log('bench: creating databases and workspaces…');
      stores = await openBenchStores();
      mainTenant = await stores.tenant('enterprise');
      if (args.meters > 0) {
        // Before ingest starts: its meter catalog then knows them from the first batch on.
        meters = await defineBenchMeters(stores.pool, mainTenant.workspaceId, args.meters);
        log(`bench: ${meters.length} meters defined on ${mainTenant.workspaceId}`);
      }
      if (args.preload > 0) {
        const t0 = Date.now();
        log(`bench: preloading ${args.preload} events into ${mainTenant.workspaceId}'s current month…`);
        await preloadEvents(stores.clickhouse, mainTenant.workspaceId, args.preload, Date.now());
        log(`bench: preloaded in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
        await markWorkspaceKnown(
          stores.redis,
          mainTenant.workspaceId,
          (args.ingestEnv.REDIS_KEY_PREFIX ?? process.env.REDIS_KEY_PREFIX) || undefined,
        );
        const waited = await waitForMerges(stores.clickhouse, stores.chDatabase, 600_000);
        log(`bench: ClickHouse's merges of the preload settled after ${(waited / 1000).toFixed(1)} s more`);
      }
      spoolDir = mkdtempSync(join(tmpdir(), 'meterd-bench-spool-'));
      ingest = await startIngest(stores, args, spoolDir, o.profileDir);
      base = ingest.url;
      aggregator = await startAggregator(stores, report);
      if (aggregator)
        log(`bench: aggregator started at ${aggregator.url} (pid ${aggregator.pid}) for rollup freshness`);
      log(
        `bench: ingest started at ${base} (pid ${ingest.pid}, ${args.threads} threads, ClickHouse database ${stores.chDatabase})`,
      );
    } else {
      base = args.target;
      mainTenant = { workspaceId: args.workspace!, token: args.key! };
      if (args.verifyDatabase !== undefined) {
        // Verify a remote deployment against the ClickHouse it ships to (CLICKHOUSE_URL and credentials).
        const cfg = loadConfig(storeVars);
        remoteCh = clickHouseFromConfig(cfg, { database: ident(args.verifyDatabase) });
      }
    }
    await preflight(base, mainTenant);
    if (args.preload > 0) {
      const done = stores
        ? recoveryDone(
            stores.redis,
            mainTenant.workspaceId,
            args.ingestEnv.REDIS_KEY_PREFIX ?? process.env.REDIS_KEY_PREFIX,
          )
        : undefined;
      const ms = await warmUp(base, mainTenant, stores?.tag ?? 'target', 600_000, done);
      log(
        `bench: the preloaded workspace's first event was stored after ${(ms / 1000).toFixed(1)} s (dedupe recovery)`,
      );
    }

    for (const [i, scenario] of args.scenarios.entries()) {
      const tag = `${stores?.tag ?? `t${Date.now().toString(36)}`}s${i}`;
      const tenants =
        scenario === 'mixed'
          ? await stores!.tenants('enterprise', args.workspaces)
          : scenario === 'quota'
            ? [await stores!.tenant('free')]
            : [mainTenant];
      const phase = await runPhase({
        o,
        scenario,
        tag,
        base,
        tenants,
        probeTenant: mainTenant,
        occurredAt,
        stores,
        ingestPid: ingest?.pid,
        log,
        verifyCh: stores?.clickhouse ?? remoteCh,
        rollupTable: aggregator ? ROLLUP_TABLE : undefined,
        aggregatorUrl: aggregator?.url,
        ...(aggregator ? { watch: { aggregator: aggregator.pid } } : {}),
        properties: args.meters > 0,
        // Checked where the load goes to the bench workspace, which the meters are defined on.
        ...(meters && aggregator && tenants[0] === mainTenant ? { meters } : {}),
      });
      report.phases.push(phase);
      for (const v of [phase.verification, phase.probeVerification, phase.meterVerification])
        if (v && !v.ok) report.correct = false;
      if (phase.quota && !phase.quota.ok) report.correct = false;
      if (args.stages && stores && (scenario === 'single' || scenario === 'batch'))
        report.stages = await runStages({
          args,
          stores,
          scenario,
          tag,
          tenant: mainTenant,
          occurredAt,
          pipeline: phase.meterd,
          eventsPerCommit: phase.serverMetrics?.eventsPerCommit,
          log,
          ...(o.progress ? { progress: o.progress } : {}),
        });
    }
  } finally {
    if (ingest) await ingest.stop();
    if (aggregator) await aggregator.stop();
    if (args.cpuProf) {
      const p = summariseProfiles(o.profileDir);
      if (p) report.profile = p;
    }
    if (spoolDir) rmSync(spoolDir, { recursive: true, force: true });
    if (stores) await stores.close();
    if (remoteCh) await remoteCh.close();
  }
  return report;
}

/** The self-started ingest, pointed at the bench's own databases, spooling into `spoolDir`. */
export async function startIngest(
  stores: BenchStores,
  args: BenchArgs,
  spoolDir: string,
  profileDir: string,
): Promise<Child> {
  const port = await freePort();
  const nodeArgs = args.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [];
  if (args.cpuProf) mkdirSync(profileDir, { recursive: true });
  return startChild(
    'ingest',
    args.ingestMain ?? INGEST_MAIN,
    {
      ...stores.env,
      INGEST_HOST: '127.0.0.1',
      INGEST_PORT: String(port),
      INGEST_THREADS: String(args.threads),
      SPOOL_DIR: spoolDir,
      LOG_LEVEL: 'warn',
      // Ten minutes, not 35 days: a run writes millions of claims into a shared Redis.
      DEDUPE_WINDOW_SECONDS: '600',
      ...args.ingestEnv,
    },
    port,
    nodeArgs,
  );
}

/**
 * The aggregator, pointed at the bench's own databases, so freshness can be measured up to the
 * hourly rollup. Optional: without a built aggregator or its tables, freshness stops at `events`.
 */
export async function startAggregator(
  stores: BenchStores,
  report: Pick<BenchReport, 'aggregator'>,
): Promise<Child | undefined> {
  if (!existsSync(AGGREGATOR_MAIN)) {
    report.aggregator.note = `${AGGREGATOR_MAIN} not built: freshness measured up to the events table only`;
    return undefined;
  }
  const rs = await stores.clickhouse.query({ query: `EXISTS TABLE ${ROLLUP_TABLE}`, format: 'TabSeparated' });
  if ((await rs.text()).trim() !== '1') {
    report.aggregator.note = `no ${ROLLUP_TABLE} table after migrating: freshness measured up to the events table only`;
    return undefined;
  }
  const port = await freePort();
  try {
    const child = await startChild(
      'aggregator',
      AGGREGATOR_MAIN,
      { ...stores.env, AGGREGATOR_PORT: String(port), LOG_LEVEL: 'warn' },
      port,
    );
    report.aggregator = { running: true, note: `started for this run (pid ${child.pid})` };
    return child;
  } catch (err) {
    report.aggregator.note = `could not start: ${(err as Error).message.slice(0, 300)}`;
    return undefined;
  }
}

export interface PhaseInput {
  o: RunOptions;
  scenario: Scenario;
  tag: string;
  base: string;
  tenants: Tenant[];
  probeTenant: Tenant;
  occurredAt: string;
  stores: BenchStores | undefined;
  ingestPid: number | undefined;
  verifyCh: BenchStores['clickhouse'] | undefined;
  rollupTable: string | undefined;
  aggregatorUrl: string | undefined;
  log: (s: string) => void;
  /** Events per second to hold the load at (the soak sets its own); undefined = as fast as served. */
  eventsPerSec?: number;
  /** Further processes whose CPU the load run samples, by name (the aggregator). */
  watch?: Record<string, number>;
  /** The load's events carry `properties` (for meters; stack/meters.ts). */
  properties?: boolean;
  /** Meters of probeTenant to verify against the raw events after the load (needs the aggregator). */
  meters?: readonly MeterDefinition[];
}

export async function runPhase(p: PhaseInput): Promise<PhaseReport> {
  const { args } = p.o;
  const connections = connectionsFor(args, p.scenario);
  const work = buildWorkload(p.scenario, p.tag, p.tenants, p.occurredAt, { properties: p.properties === true });
  const probe = new FreshnessProbe(
    `${p.tag}p`,
    p.base,
    p.probeTenant,
    p.occurredAt,
    p.verifyCh,
    'events',
    p.rollupTable,
  );
  // The soak's peak and its half-rate run use one generator: autocannon, the one that holds a rate.
  const generator = p.scenario === 'soak' ? 'autocannon' : args.generator;
  const load = (label: string, durationSec: number, overallRate?: number): Promise<LoadSummary> =>
    generate(generator, {
      label,
      url: p.base,
      connections,
      durationSec,
      work,
      ...(overallRate === undefined ? {} : { overallRate }),
      ...(p.ingestPid === undefined ? {} : { serverPid: p.ingestPid }),
      ...(p.watch === undefined ? {} : { watch: p.watch }),
      ...(p.o.progress ? { progress: p.o.progress } : {}),
    });
  // Soak: the peak first (unlimited, SOAK_PEAK_SEC), then half of it for the run's duration.
  let soakRate: { peak: number; rate: number } | undefined;
  if (p.scenario === 'soak') {
    const peak = (await load('meterd soak peak', SOAK_PEAK_SEC)).eventsPerSec ?? 0;
    soakRate = { peak, rate: Math.max(BATCH_SIZE, Math.round(peak / 2)) };
    p.log(`bench: soak — peak ${peak} events/s; soaking at ${soakRate.rate} events/s`);
  }
  p.log(`bench: ${p.scenario} — ${work.describe}; ${connections} connections for ${args.durationSec}s`);
  const before = await scrape(p.base);
  const aggBefore = p.aggregatorUrl === undefined ? undefined : await scrape(p.aggregatorUrl);
  const recorder = soakRate ? new SoakRecorder(p.aggregatorUrl, p.base) : undefined;
  await recorder?.start();
  probe.start();
  const startedAt = Date.now();
  let meterd: LoadSummary;
  try {
    const rate = soakRate?.rate ?? p.eventsPerSec;
    meterd = await load(`meterd ${p.scenario}`, args.durationSec, rate === undefined ? undefined : rate / BATCH_SIZE);
  } catch (err) {
    await recorder?.stop();
    await probe.finish(0);
    throw err;
  }
  await recorder?.stop();
  const phase: PhaseReport = {
    scenario: p.scenario,
    describe: work.describe,
    meterd,
    answers: work.counters,
    ratios: {},
    targets: [],
  };
  const after = await scrape(p.base);
  if (before && after) phase.serverMetrics = diff(before, after);
  const aggAfter = p.aggregatorUrl === undefined ? undefined : await scrape(p.aggregatorUrl);
  if (aggBefore && aggAfter) {
    const cycles = bucketDelta(cycleBucketsOf(aggBefore), cycleBucketsOf(aggAfter));
    const ms = (q: number) => {
      const s = histogramQuantile(cycles, q);
      return s === undefined ? undefined : Math.round(s * 10_000) / 10;
    };
    phase.aggregatorCycles = { count: cycles.at(-1)?.[1] ?? 0, medianMs: ms(0.5), p99Ms: ms(0.99) };
  }

  if (p.verifyCh) {
    p.log('bench: waiting for the spool to ship, then verifying ClickHouse…');
    const freshness = await probe.finish();
    const drained = await waitForSpool(p.base);
    if (drained !== undefined) phase.spoolDrainMs = drained;
    phase.freshness = freshness;
    phase.verification = await verifyKeys(p.verifyCh, 'events', work.tracker, p.occurredAt);
    phase.probeVerification = await verifyKeys(p.verifyCh, 'events', probe.tracker, p.occurredAt);
    if (p.meters !== undefined && p.meters.length > 0) {
      p.log(`bench: checking ${p.meters.length} meters' rollups against the raw events…`);
      phase.meterVerification = await verifyMeters(
        p.verifyCh,
        p.probeTenant.workspaceId,
        p.meters,
        Date.parse(p.occurredAt),
      );
    }
    if (drained === undefined) {
      phase.verification.ok = false;
      phase.verification.note = `${phase.verification.note ?? ''} the spool did not drain within 120 s`.trim();
    }
  } else {
    phase.freshness = await probe.finish(0);
  }
  if (recorder && soakRate && phase.freshness) {
    phase.soak = soakReport(
      recorder.scrapes,
      startedAt,
      meterd.series,
      probe.rollupLags(),
      soakRate.peak,
      soakRate.rate,
    );
  }
  if (p.scenario === 'quota') {
    const limit = PLAN_QUOTAS.free.eventsPerPeriod!;
    const acknowledged = work.counters.stored;
    phase.quota = { limit, acknowledged, ok: acknowledged === limit };
  }

  if (args.compare && p.stores && p.scenario !== 'quota' && p.scenario !== 'soak') await compare(p, phase, connections);
  phase.targets = evaluateTargets(phase);
  return phase;
}

/** The same load against the bare-uWS ceiling and the conventional baseline, then Redis's own rate. */
async function compare(p: PhaseInput, phase: PhaseReport, connections: number): Promise<void> {
  const { args } = p.o;
  const stores = p.stores!;
  const run = async (
    name: string,
    script: string,
    env: Record<string, string>,
    verifyTable?: string,
  ): Promise<[LoadSummary, Verification | undefined]> => {
    const port = await freePort();
    const child = await startChild(
      name,
      new URL(script, CHILDREN).pathname,
      { ...env, PORT: String(port), THREADS: String(args.threads) },
      port,
    );
    const work = buildWorkload(p.scenario, `${p.tag}${name[0]}`, p.tenants, p.occurredAt, {
      properties: p.properties === true,
    });
    let summary: LoadSummary;
    try {
      summary = await generate(args.generator, {
        label: `${name} ${p.scenario}`,
        url: child.url,
        connections,
        durationSec: args.durationSec,
        work,
        serverPid: child.pid,
        ...(p.o.progress ? { progress: p.o.progress } : {}),
      });
    } finally {
      // Stopped before verifying: its last inserts finish while it drains.
      await child.stop();
    }
    const v = verifyTable ? await verifyKeys(stores.clickhouse, verifyTable, work.tracker) : undefined;
    return [summary, v];
  };
  p.log('bench: ceiling — bare uWebSockets.js accept-and-drop, same load');
  [phase.ceiling] = await run('ceiling', 'uws-drop.js', {});
  p.log('bench: baseline — Fastify + ioredis SET NX per event + @clickhouse/client small batches, same load');
  const [baseline, bv] = await run(
    'baseline',
    'baseline.js',
    { ...stores.env, BASELINE_TABLE: 'baseline_events' },
    'baseline_events',
  );
  phase.baseline = baseline;
  if (bv) phase.baselineVerification = bv;
  p.log('bench: Redis SET NX rate (redis-benchmark)…');
  phase.redisSetNx = await redisSetNxRate(stores.cfg.REDIS_URL, p.tag);

  const m = phase.meterd;
  const ratio = (a: number | undefined, b: number | undefined) =>
    a && b ? Math.round((a / b) * 100) / 100 : undefined;
  const perSec = (s: LoadSummary) => (p.scenario === 'single' ? s.requestsPerSec : s.eventsPerSec);
  const vsCeiling = ratio(perSec(m), perSec(phase.ceiling!));
  const vsBaseline = ratio(perSec(m), perSec(baseline));
  const vsRedis = ratio(m.eventsPerSec, phase.redisSetNx.opsPerSec);
  if (vsCeiling !== undefined) phase.ratios.vsCeiling = vsCeiling;
  if (vsBaseline !== undefined) phase.ratios.vsBaseline = vsBaseline;
  if (vsRedis !== undefined) phase.ratios.vsRedisSetNx = vsRedis;
}
