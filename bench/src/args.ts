import { parseArgs as parseArgv, type ParseArgsConfig } from 'node:util';
import { BenchError } from './errors.js';
import { MAX_BENCH_METERS } from './stack/meters.js';

export const SCENARIOS = ['single', 'batch', 'duplicates', 'mixed', 'quota', 'soak'] as const;
export type Scenario = (typeof SCENARIOS)[number];

export interface BenchArgs {
  /** What runs: one scenario, or with --quick and no --scenario, single + batch + duplicates. */
  scenarios: Scenario[];
  durationSec: number;
  /** 0 = the scenario's default (see connectionsFor). */
  connections: number;
  /** Base URL of a running ingest; undefined = start one (and its stores) for this run. */
  target: string | undefined;
  /** API key for --target (or BENCH_API_KEY); the self-started stack mints its own. */
  key: string | undefined;
  /** Workspace of --key, needed with --target. */
  workspace: string | undefined;
  /** With --target: the ClickHouse database the target ships to, to verify against (CLICKHOUSE_URL). */
  verifyDatabase: string | undefined;
  quick: boolean;
  /** Run the bare-uWS ceiling, the Redis SET NX rate and the Fastify baseline in the same run. */
  compare: boolean;
  /** ingest threads of the self-started ingest (and of the ceiling, for a like-for-like ratio). */
  threads: number;
  /** Write V8 CPU profiles of the self-started ingest to results/. */
  cpuProf: boolean;
  workspaces: number;
  /** Events loaded into the bench workspace's current month before the run (history). */
  preload: number;
  /** With --preload: compare against an empty store in the same run (preload-compare.ts). */
  againstEmpty: boolean;
  /** --against-empty: rounds (each one phase per store) and the fixed load in events/s. */
  rounds: number;
  rate: number;
  /** Meters defined on the bench workspace before the run (its events then carry properties). */
  meters: number;
  /** With --meters: the batch scenario without and with the meters, alternately (meters-compare.ts). */
  againstNoMeters: boolean;
  /** Extra environment of the self-started ingest (--ingest-env NAME=value, repeatable). */
  ingestEnv: Record<string, string>;
  /** Entry point of the self-started ingest (default: this checkout's build). */
  ingestMain: string | undefined;
  /** --compare-ref: also bench this git ref's ingest, same scenario, and report this ÷ ref. */
  compareRef: string | undefined;
  /**
   * What generates the load: wrk (LuaJIT, one thread per connection; the default when installed)
   * or autocannon in this process. Fixed-rate loads (soak, --against-empty) always use autocannon.
   */
  generator: Generator;
  /** After the phase, measure each stage of the hot path alone and say which one binds (stages.ts). */
  stages: boolean;
  out: string;
}

export const GENERATORS = ['wrk', 'autocannon'] as const;
export type Generator = (typeof GENERATORS)[number];

const HELP = `usage: npm run bench -- [options]

  --scenario single|batch|duplicates|mixed|quota|soak   (default single)
  --duration 30s          run length per measured server (s, m suffix; default 30s, soak 10m)
  --connections N         concurrent connections (default 50; single 100, batch and soak 16)
  --target URL            bench a running ingest instead of starting one (needs --key and --workspace)
  --key sks_…             API key for --target (or env BENCH_API_KEY)
  --workspace ws_…        workspace of that key
  --verify-database NAME  with --target: ClickHouse database to verify against (at CLICKHOUSE_URL)
  --threads N             threads of the self-started ingest and of the ceiling (default 2)
  --workspaces N          workspaces in the mixed scenario (default 2000)
  --preload N             first load N events into the bench workspace's current month (server-side)
  --against-empty         with --preload: batch at a fixed --rate on an empty and on the preloaded
                          store, alternately in one run (E P P E …), medians and ratios per side
  --rounds N              --against-empty / --against-no-meters rounds (default 2: four phases)
  --rate N                --against-empty load in events/s (default 5000)
  --meters N              define N meters (1-50: count, sum, max, unique_count, latest, some grouped by
                          model / region / route) on the bench workspace; its events carry properties;
                          verification checks the meters' rollups against the raw events, exactly
  --against-no-meters     with --meters: batch without and with the meters, alternately in one run
                          (N M M N …, --rounds), events/s ratio and rollup freshness p99 of each side
  --no-compare            skip the ceiling and baseline runs
  --ingest-env NAME=value extra environment for the self-started ingest (repeatable), e.g. SHIP_INTERVAL_MS=100
  --compare-ref REF       also bench git REF's ingest (e.g. main), alternating this, REF, this, REF;
                          reports this ÷ REF (built in a temporary folder with its own npm ci)
  --ingest-main PATH      entry point of the self-started ingest (default: this checkout's build)
  --cpu-prof              write CPU profiles of the self-started ingest to the results folder
  --generator wrk|autocannon  load generator (default wrk when installed: apt-get install wrk)
  --stages                after the run, each stage of the hot path alone (HTTP, validation,
                          Redis claim, spool, ClickHouse insert) and which one binds (single, batch)
  --quick                 ~20 s correctness check under load (no loss, no duplicates); exits 1 on any
  --out DIR               results folder (default bench/results)
`;

export function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)(s|m)?$/.exec(s);
  if (m === null)
    throw new BenchError('METERD_BENCH_USAGE', `--duration ${JSON.stringify(s)}: expected e.g. 30s, 2m or 45`);
  const n = Number(m[1]) * (m[2] === 'm' ? 60 : 1);
  if (n < 1 || n > 3600) throw new BenchError('METERD_BENCH_USAGE', '--duration must be between 1s and 60m');
  return n;
}

function positive(flag: string, s: string | undefined, max: number): number {
  if (s === undefined || !/^\d+$/.test(s) || Number(s) < 1 || Number(s) > max) {
    throw new BenchError('METERD_BENCH_USAGE', `${flag} expects a whole number from 1 to ${max}`);
  }
  return Number(s);
}

const usage = (message: string): BenchError => new BenchError('METERD_BENCH_USAGE', message);

function scenario(s: string): Scenario {
  if (!(SCENARIOS as readonly string[]).includes(s)) throw usage(`--scenario must be one of ${SCENARIOS.join(', ')}`);
  return s as Scenario;
}

function target(t: string): string {
  try {
    const u = new URL(t);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('protocol');
  } catch {
    throw usage(`--target ${JSON.stringify(t)} is not an http(s) URL`);
  }
  return t.replace(/\/$/, '');
}

function generator(g: string): Generator {
  if (!(GENERATORS as readonly string[]).includes(g))
    throw usage(`--generator must be one of ${GENERATORS.join(', ')}`);
  return g as Generator;
}

function gitRef(ref: string): string {
  if (!/^[A-Za-z0-9._/-]{1,200}$/.test(ref) || ref.startsWith('-'))
    throw usage(`--compare-ref ${JSON.stringify(ref)} is not a git ref`);
  return ref;
}

const OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  scenario: { type: 'string' },
  duration: { type: 'string' },
  connections: { type: 'string' },
  target: { type: 'string' },
  key: { type: 'string' },
  workspace: { type: 'string' },
  'verify-database': { type: 'string' },
  threads: { type: 'string' },
  workspaces: { type: 'string' },
  preload: { type: 'string' },
  'against-empty': { type: 'boolean' },
  rounds: { type: 'string' },
  rate: { type: 'string' },
  meters: { type: 'string' },
  'against-no-meters': { type: 'boolean' },
  'no-compare': { type: 'boolean' },
  'cpu-prof': { type: 'boolean' },
  quick: { type: 'boolean' },
  out: { type: 'string' },
  'ingest-main': { type: 'string' },
  'compare-ref': { type: 'string' },
  'ingest-env': { type: 'string', multiple: true },
  generator: { type: 'string' },
  stages: { type: 'boolean' },
} as const satisfies ParseArgsConfig['options'];

/** node:util's parse, its errors turned into the bench's usage errors (with the help text). */
function parse(argv: readonly string[]) {
  try {
    return parseArgv({ args: [...argv], options: OPTIONS, strict: true, allowPositionals: false }).values;
  } catch (err) {
    const e = err as { code?: string; message: string };
    const option = /'(-[^' ]+)/.exec(e.message)?.[1] ?? '';
    if (e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      // The value looks like an option (`--compare-ref --evil`): refused as its flag would refuse it,
      // or else as missing (a value starting with '-' is written --flag=-…).
      const given = argv[argv.indexOf(option) + 1];
      if (option === '--compare-ref' && given !== undefined) gitRef(given);
      throw usage(`${option} needs a value\n\n${HELP}`);
    }
    const name = e.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL' ? (/'([^']*)'/.exec(e.message)?.[1] ?? '') : option;
    throw usage(`unknown option ${JSON.stringify(name)}\n\n${HELP}`);
  }
}

/** `wrkInstalled`: whether `wrk` is on PATH (load/wrk.ts wrkAvailable), which sets the default generator. */
export function parseArgs(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  defaultOut: string,
  wrkInstalled = false,
): BenchArgs | 'help' {
  const v = parse(argv);
  if (v.help === true) return 'help';
  const a: BenchArgs = {
    scenarios: v.scenario === undefined ? ['single'] : [scenario(v.scenario)],
    durationSec: v.duration === undefined ? (v.scenario === 'soak' ? 600 : 30) : parseDuration(v.duration),
    connections: v.connections === undefined ? 0 : positive('--connections', v.connections, 10_000),
    target: v.target === undefined ? undefined : target(v.target),
    key: v.key ?? (env.BENCH_API_KEY || undefined),
    workspace: v.workspace,
    verifyDatabase: v['verify-database'],
    quick: v.quick === true,
    compare: v['no-compare'] !== true,
    threads: v.threads === undefined ? 2 : positive('--threads', v.threads, 64),
    cpuProf: v['cpu-prof'] === true,
    workspaces: v.workspaces === undefined ? 2000 : positive('--workspaces', v.workspaces, 100_000),
    preload: v.preload === undefined ? 0 : positive('--preload', v.preload, 1_000_000_000),
    againstEmpty: v['against-empty'] === true,
    rounds: v.rounds === undefined ? 2 : positive('--rounds', v.rounds, 20),
    rate: v.rate === undefined ? 5_000 : positive('--rate', v.rate, 10_000_000),
    meters: v.meters === undefined ? 0 : positive('--meters', v.meters, MAX_BENCH_METERS),
    againstNoMeters: v['against-no-meters'] === true,
    ingestEnv: {},
    out: v.out ?? defaultOut,
    ingestMain: v['ingest-main'],
    compareRef: v['compare-ref'] === undefined ? undefined : gitRef(v['compare-ref']),
    generator: v.generator === undefined ? (wrkInstalled ? 'wrk' : 'autocannon') : generator(v.generator),
    stages: v.stages === true,
  };
  if (a.generator === 'wrk' && !wrkInstalled)
    throw usage('--generator wrk: wrk is not installed here (Debian: apt-get install wrk)');
  if (a.stages && (a.target !== undefined || a.scenarios.some((s) => s !== 'single' && s !== 'batch')))
    throw usage('--stages measures the stages of the self-started stack for --scenario single or batch');
  for (const e of v['ingest-env'] ?? []) {
    const kv = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(e);
    if (kv === null) throw usage('--ingest-env expects NAME=value, e.g. SPOOL_FSYNC=never');
    a.ingestEnv[kv[1]!] = kv[2]!;
  }
  if (a.quick) {
    // Correctness, not speed: short, no side-by-side runs, so it fits in a test suite.
    if (v.duration === undefined) a.durationSec = 4;
    if (v.scenario === undefined) a.scenarios = ['single', 'batch', 'duplicates'];
    a.compare = false;
  }

  if (a.againstEmpty && (a.preload === 0 || a.target !== undefined || a.compareRef !== undefined))
    throw usage('--against-empty needs --preload N, and runs only on the self-started stack without --compare-ref');

  if (a.meters > 0 && a.target !== undefined)
    throw usage('--meters defines meters on the self-started stack (no --target)');
  if (a.againstNoMeters) {
    if (a.meters === 0 || a.againstEmpty || a.compareRef !== undefined || a.target !== undefined)
      throw usage(
        '--against-no-meters needs --meters N, and runs only on the self-started stack without --against-empty or --compare-ref',
      );
    if (v.scenario !== undefined && v.scenario !== 'batch') throw usage('--against-no-meters runs the batch scenario');
    a.scenarios = ['batch'];
    // Meters against none: the ceilings and baseline add nothing to that comparison.
    a.compare = false;
  }

  if (a.compareRef !== undefined) {
    if (a.target !== undefined)
      throw new BenchError(
        'METERD_BENCH_USAGE',
        '--compare-ref benches two self-started builds; it cannot be combined with --target',
      );
    // Branch against branch: the ceilings and baseline add nothing to that comparison.
    a.compare = false;
  }
  if (a.target !== undefined) {
    if (a.key === undefined)
      throw new BenchError(
        'METERD_BENCH_USAGE',
        '--target needs --key (or BENCH_API_KEY): an API key with the meter:write scope',
      );
    if (a.workspace === undefined)
      throw new BenchError('METERD_BENCH_USAGE', '--target needs --workspace: the workspace id of --key');
    const own = a.scenarios.find((s) => s === 'mixed' || s === 'quota');
    if (own !== undefined) {
      throw new BenchError(
        'METERD_BENCH_USAGE',
        `--scenario ${own} creates its own workspaces; it runs only against the self-started stack (no --target)`,
      );
    }
  }
  return a;
}

export { HELP };

/** Default connections: enough to keep both server threads busy without queueing for nothing. */
export function connectionsFor(a: BenchArgs, s: Scenario): number {
  if (a.connections > 0) return a.connections;
  return s === 'batch' || s === 'soak' ? 16 : s === 'quota' ? 10 : s === 'single' ? 100 : 50;
}
