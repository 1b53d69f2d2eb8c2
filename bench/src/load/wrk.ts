import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { BenchError } from '../errors.js';
import { readProc } from './procstat.js';
import { generatorUse, LoadSampler, type LoadSummary } from './sampler.js';
import type { Workload } from './workloads.js';
import { BENCH_PROPERTY_VALUES, BENCH_TOKENS_MAX, BENCH_USERS } from '../stack/meters.js';

/** The Lua side: bodies, keys and answer reading (kept in the source tree, read by wrk). */
export const WRK_SCRIPT = new URL('../../../src/load/wrk-load.lua', import.meta.url).pathname;

/**
 * Whether `wrk` 4.x (LuaJIT) is on PATH, e.g. Debian's package: wrk-load.lua relies on how 4.x
 * calls its script (one unsent request() on thread 0 before the run).
 */
export function wrkAvailable(): boolean {
  const r = spawnSync('wrk', ['--version'], { encoding: 'utf8' });
  return r.error === undefined && /\b4\.\d/.test(`${r.stdout}${r.stderr}`);
}

export interface WrkOptions {
  label: string;
  url: string;
  /** One wrk thread per connection: each thread's answers then come back in its requests' order. */
  connections: number;
  durationSec: number;
  work: Workload;
  serverPid?: number;
  watch?: Record<string, number>;
  progress?: NodeJS.WriteStream;
}

/** What wrk-load.lua needs to send benchProperties' values (it spells out only their shape). */
function propertiesEnv(): Record<string, string> {
  const v = BENCH_PROPERTY_VALUES;
  return {
    MWRK_PROPERTIES: '1',
    MWRK_PROP_MODEL: v.model.join(' '),
    MWRK_PROP_REGION: v.region.join(' '),
    MWRK_PROP_ROUTE: v.route.join(' '),
    MWRK_PROP_TOKENS: String(BENCH_TOKENS_MAX),
    MWRK_PROP_USERS: String(BENCH_USERS),
  };
}

/** Latency buckets of wrk-load.lua: bucket i holds latencies below BASE × RATIO^(i + 1) ms. */
const BUCKET_BASE_MS = 0.05;
const BUCKET_RATIO = 1.15;

/** One thread's "@t" line: its answers since its previous line. */
export interface WrkTick {
  thread: number;
  requests: number;
  events: number;
  non2xx: number;
  buckets: Map<number, number>;
}

export function parseTick(line: string): WrkTick | undefined {
  const f = line.trim().split(' ');
  if (f[0] !== '@t' || f.length < 5) return undefined;
  const buckets = new Map<number, number>();
  for (const bc of f.slice(5)) {
    const [b, c] = bc.split(':').map(Number) as [number, number];
    buckets.set(b, (buckets.get(b) ?? 0) + c);
  }
  return { thread: Number(f[1]), requests: Number(f[2]), events: Number(f[3]), non2xx: Number(f[4]), buckets };
}

/** The q-quantile of a bucket histogram, as its bucket's upper bound in ms (0 when empty). */
export function bucketQuantile(buckets: Map<number, number>, q: number): number {
  const total = [...buckets.values()].reduce((a, c) => a + c, 0);
  if (total === 0) return 0;
  const rank = Math.ceil(q * total);
  let seen = 0;
  for (const b of [...buckets.keys()].sort((x, y) => x - y)) {
    seen += buckets.get(b)!;
    if (seen >= rank) return Math.round(BUCKET_BASE_MS * BUCKET_RATIO ** (b + 1) * 100) / 100;
  }
  return 0;
}

/** What done() in wrk-load.lua wrote: per thread its counters, answers and key states; the totals. */
export interface WrkResults {
  threads: {
    thread: number;
    stored: number;
    duplicate: number;
    rejected: number;
    statusCounts: Record<string, number>;
    /** State bits (tracker.ts) of the thread's keys k = 0, 1, 2…, one digit each. */
    states: string;
  }[];
  latencyUs: { p50: number; p90: number; p99: number; max: number; mean: number };
  durationUs: number;
  requests: number;
  errors: { connect: number; read: number; write: number; status: number; timeout: number };
}

export function parseResults(text: string): WrkResults {
  const r: WrkResults = {
    threads: [],
    latencyUs: { p50: 0, p90: 0, p99: 0, max: 0, mean: 0 },
    durationUs: 0,
    requests: 0,
    errors: { connect: 0, read: 0, write: 0, status: 0, timeout: 0 },
  };
  const states = new Map<number, string>();
  let seenSummary = false;
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f[0] === 'T') {
      const statusCounts: Record<string, number> = {};
      for (const sc of (f[5] ?? '').split(',').filter(Boolean)) {
        const [code, count] = sc.split(':') as [string, string];
        statusCounts[code] = Number(count);
      }
      r.threads.push({
        thread: Number(f[1]),
        stored: Number(f[2]),
        duplicate: Number(f[3]),
        rejected: Number(f[4]),
        statusCounts,
        states: '',
      });
    } else if (f[0] === 'K') states.set(Number(f[1]), f[2] ?? '');
    else if (f[0] === 'L') {
      const [p50, p90, p99, max, mean] = f.slice(1).map(Number) as [number, number, number, number, number];
      r.latencyUs = { p50, p90, p99, max, mean };
    } else if (f[0] === 'S') {
      const [d, req, connect, read, write, status, timeout] = f.slice(1).map(Number) as number[];
      r.durationUs = d!;
      r.requests = req!;
      r.errors = { connect: connect!, read: read!, write: write!, status: status!, timeout: timeout! };
      seenSummary = true;
    }
  }
  if (!seenSummary) throw new BenchError('METERD_BENCH_CHILD_FAILED', 'wrk wrote no summary: its run did not finish');
  for (const t of r.threads) t.states = states.get(t.thread) ?? '';
  return r;
}

/**
 * Folds wrk's per-thread results into the workload's tracker and counters: thread t's k-th key is
 * index t + stride × k (wrk-load.lua), so verification sees one run as if one process had sent it.
 */
export function mergeResults(r: WrkResults, work: Pick<Workload, 'tracker' | 'counters'>, stride: number): void {
  for (const t of r.threads) {
    work.counters.stored += t.stored;
    work.counters.duplicate += t.duplicate;
    work.counters.rejected += t.rejected;
    for (let k = 0; k < t.states.length; k++) {
      const bits = t.states.charCodeAt(k) - 48;
      if (bits > 0) work.tracker.mark(t.thread + stride * k, bits);
    }
  }
}

/**
 * Runs wrk once with wrk-load.lua: `connections` threads of one connection each, the workload's
 * bodies and keys, the per-second series from the threads' tick lines, wrk's CPU (all its threads)
 * as the generator's, and at the end every key's fate folded into the workload's tracker.
 */
export async function runWrk(o: WrkOptions): Promise<LoadSummary> {
  const dir = mkdtempSync(join(tmpdir(), 'meterd-wrk-'));
  try {
    const tenantsFile = join(dir, 'tenants');
    writeFileSync(tenantsFile, o.work.tenants.map((t) => `${t.workspaceId} ${t.token}\n`).join(''));
    const out = join(dir, 'results');
    const c = String(o.connections);
    const child = spawn(
      'wrk',
      ['-t', c, '-c', c, '-d', `${o.durationSec}s`, '--timeout', '30s', '-s', WRK_SCRIPT, o.url],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: {
          ...process.env,
          MWRK_TAG: o.work.tracker.tag,
          MWRK_SCENARIO: o.work.scenario === 'soak' ? 'batch' : o.work.scenario,
          MWRK_TENANTS: tenantsFile,
          MWRK_OCCURRED: o.work.occurredAt,
          MWRK_THREADS: c,
          MWRK_OUT: out,
          ...(o.work.properties ? propertiesEnv() : {}),
        },
      },
    );
    const pid = child.pid;
    const sampler = new LoadSampler({
      label: o.label,
      durationSec: o.durationSec,
      generatorCpuSec: () => (pid === undefined ? undefined : readProc(pid)?.cpuSec),
      ...(o.serverPid === undefined ? {} : { serverPid: o.serverPid }),
      ...(o.watch === undefined ? {} : { watch: o.watch }),
      ...(o.progress === undefined ? {} : { progress: o.progress }),
    });
    let second = { requests: 0, events: 0, non2xx: 0, buckets: new Map<number, number>() };
    let other = '';
    createInterface({ input: child.stderr }).on('line', (line) => {
      const t = parseTick(line);
      if (t === undefined) {
        other = (other + line + '\n').slice(-4_000);
        return;
      }
      second.requests += t.requests;
      second.events += t.events;
      second.non2xx += t.non2xx;
      for (const [b, n] of t.buckets) second.buckets.set(b, (second.buckets.get(b) ?? 0) + n);
    });
    child.stdout.resume();
    const tick = (): void => {
      const s = second;
      second = { requests: 0, events: 0, non2xx: 0, buckets: new Map() };
      sampler.tick({
        requests: s.requests,
        events: s.events,
        non2xx: s.non2xx,
        p50Ms: bucketQuantile(s.buckets, 0.5),
        p99Ms: bucketQuantile(s.buckets, 0.99),
      });
    };
    const timer = setInterval(tick, 1000);
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', resolve);
    }).finally(() => clearInterval(timer));
    tick();
    if (o.progress) o.progress.write('\n');
    if (code !== 0) throw new BenchError('METERD_BENCH_CHILD_FAILED', `wrk exited with code ${code}:\n${other.trim()}`);
    let text: string;
    try {
      text = readFileSync(out, 'utf8');
    } catch (err) {
      throw new BenchError('METERD_BENCH_CHILD_FAILED', `wrk wrote no results:\n${other.trim()}`, err);
    }
    const r = parseResults(text);
    mergeResults(r, o.work, o.connections);
    return summarise(o, r, sampler);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function summarise(o: WrkOptions, r: WrkResults, sampler: LoadSampler): LoadSummary {
  const statusCounts: Record<string, number> = {};
  for (const t of r.threads)
    for (const [code, n] of Object.entries(t.statusCounts)) statusCounts[code] = (statusCounts[code] ?? 0) + n;
  const duration = r.durationUs / 1e6;
  const ms = (us: number) => Math.round(us / 10) / 100;
  const a = sampler.averages();
  const events = o.work.counters.stored + o.work.counters.duplicate;
  return {
    label: o.label,
    durationSec: Math.round(duration * 100) / 100,
    connections: o.connections,
    requests: r.requests,
    requestsPerSec: Math.round(r.requests / duration),
    eventsPerSec: Math.round(events / duration),
    latencyMs: {
      p50: ms(r.latencyUs.p50),
      p90: ms(r.latencyUs.p90),
      p99: ms(r.latencyUs.p99),
      max: ms(r.latencyUs.max),
      mean: ms(r.latencyUs.mean),
    },
    statusCounts,
    errors: r.errors.connect + r.errors.read + r.errors.write,
    timeouts: r.errors.timeout,
    server: {
      pid: o.serverPid,
      cpuPctAvg: o.serverPid === undefined ? undefined : a.serverCpuPctAvg,
      rssMbMax: o.serverPid === undefined ? undefined : a.serverRssMbMax,
    },
    generatorCpuPctAvg: a.generatorCpuPctAvg,
    generator: generatorUse('wrk', 1, o.connections, a.generatorCpuPctAvg, r.requests, duration),
    redisCpuPctAvg: a.redisCpuPctAvg,
    clickhouseCpuPctAvg: a.clickhouseCpuPctAvg,
    otherCpuPctAvg: a.otherCpuPctAvg,
    series: sampler.series,
  };
}
