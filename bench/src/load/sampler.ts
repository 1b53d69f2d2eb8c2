import { availableParallelism } from 'node:os';
import { CpuMeter, pidsByName, readProc } from './procstat.js';

/** One second of a run, for the chart and the report. */
export interface Sample {
  t: number;
  requests: number;
  events: number;
  p50Ms: number;
  p99Ms: number;
  non2xx: number;
  serverCpuPct: number;
  serverRssMb: number;
  generatorCpuPct: number;
  /** Local Redis and ClickHouse servers, when they run on this machine (0 otherwise). */
  redisCpuPct: number;
  clickhouseCpuPct: number;
  /** Further processes the run was asked to watch (e.g. the aggregator), by name. */
  otherCpuPct?: Record<string, number>;
}

/** What generated the load, and whether it had CPU to spare. */
export interface GeneratorUse {
  tool: 'wrk' | 'autocannon';
  /** OS processes generating load (their CPU is summed) and the threads among them that send. */
  processes: number;
  threads: number;
  /** The most CPU it could use, in percent of one core: min(sending threads, cores) × 100. */
  capacityPct: number;
  cpuPctAvg: number;
  /** Requests answered per CPU-second of the generator: its efficiency on this machine. */
  requestsPerCpuSec: number | undefined;
}

export interface LoadSummary {
  label: string;
  durationSec: number;
  connections: number;
  requests: number;
  requestsPerSec: number;
  /** Events acknowledged (stored or duplicate) per second; undefined when bodies are not read. */
  eventsPerSec: number | undefined;
  latencyMs: { p50: number; p90: number; p99: number; max: number; mean: number };
  statusCounts: Record<string, number>;
  errors: number;
  timeouts: number;
  server: { pid: number | undefined; cpuPctAvg: number | undefined; rssMbMax: number | undefined };
  /** The generator's CPU summed over its processes (= generator.cpuPctAvg). */
  generatorCpuPctAvg: number;
  generator: GeneratorUse;
  redisCpuPctAvg: number;
  clickhouseCpuPctAvg: number;
  /** Averages of the further processes watched (Sample.otherCpuPct). */
  otherCpuPctAvg: Record<string, number>;
  series: Sample[];
}

/** The generator's capacity and efficiency from what was measured (a pure function: tested). */
export function generatorUse(
  tool: GeneratorUse['tool'],
  processes: number,
  threads: number,
  cpuPctAvg: number,
  requests: number,
  durationSec: number,
  cores = availableParallelism(),
): GeneratorUse {
  const cpuSec = (cpuPctAvg / 100) * durationSec;
  return {
    tool,
    processes,
    threads,
    capacityPct: Math.min(threads, cores) * 100,
    cpuPctAvg,
    requestsPerCpuSec: cpuSec > 0 ? Math.round(requests / cpuSec) : undefined,
  };
}

export interface SamplerOptions {
  label: string;
  durationSec: number;
  /** Process whose CPU and RSS are sampled (a child this bench started); undefined for a remote target. */
  serverPid?: number;
  /** CPU seconds of every process generating the load, summed. */
  generatorCpuSec: () => number | undefined;
  /** Further processes to watch, by name (e.g. { aggregator: pid }). */
  watch?: Record<string, number>;
  progress?: NodeJS.WriteStream;
}

/**
 * The per-second series of a load run, whichever tool generates it: the server's CPU and RSS, the
 * generator's CPU over all its processes, the local Redis and ClickHouse servers' CPU and any
 * further watched process, with a one-line progress display.
 */
export class LoadSampler {
  readonly series: Sample[] = [];
  private readonly server: CpuMeter | undefined;
  private readonly generator: CpuMeter;
  private readonly redis: CpuMeter;
  private readonly clickhouse: CpuMeter;
  private readonly others: [string, CpuMeter][];
  private readonly started = performance.now();

  constructor(private readonly o: SamplerOptions) {
    const pid = o.serverPid;
    this.server = pid === undefined ? undefined : new CpuMeter(() => readProc(pid)?.cpuSec);
    this.generator = new CpuMeter(o.generatorCpuSec);
    this.redis = storeMeter('redis-server');
    this.clickhouse = storeMeter('clickhouse-serv');
    this.others = Object.entries(o.watch ?? {}).map(([name, p]) => [name, new CpuMeter(() => readProc(p)?.cpuSec)]);
  }

  /** Records one second: what the generator counted, plus the CPU of every watched process. */
  tick(s: { requests: number; events: number; non2xx: number; p50Ms: number; p99Ms: number }): Sample {
    const proc = this.o.serverPid === undefined ? undefined : readProc(this.o.serverPid);
    const sample: Sample = {
      t: Math.round((performance.now() - this.started) / 100) / 10,
      ...s,
      serverCpuPct: this.server ? Math.round(this.server.sample()) : 0,
      serverRssMb: proc ? Math.round(proc.rssBytes / 2 ** 20) : 0,
      generatorCpuPct: Math.round(this.generator.sample()),
      redisCpuPct: Math.round(this.redis.sample()),
      clickhouseCpuPct: Math.round(this.clickhouse.sample()),
    };
    if (this.others.length > 0)
      sample.otherCpuPct = Object.fromEntries(this.others.map(([name, m]) => [name, Math.round(m.sample())]));
    if (s.requests > 0 || this.series.length > 0) this.series.push(sample);
    if (this.o.progress) {
      const line =
        `[${this.o.label}] ${sample.t.toFixed(0)}s/${this.o.durationSec}s  ${fmt(s.requests)} req/s  ${fmt(s.events)} ev/s  ` +
        `p50 ${s.p50Ms.toFixed(1)} ms  p99 ${s.p99Ms.toFixed(1)} ms  non-2xx ${s.non2xx}  server cpu ${sample.serverCpuPct}%  bench cpu ${sample.generatorCpuPct}%  redis ${sample.redisCpuPct}%  clickhouse ${sample.clickhouseCpuPct}%`;
      this.o.progress.write(this.o.progress.isTTY ? `\r\x1b[K${line}` : `${line}\n`);
    }
    return sample;
  }

  /** Averages over the seconds that carried load. */
  averages(): Pick<LoadSummary, 'generatorCpuPctAvg' | 'redisCpuPctAvg' | 'clickhouseCpuPctAvg' | 'otherCpuPctAvg'> & {
    serverCpuPctAvg: number;
    serverRssMbMax: number;
  } {
    const loaded = this.series.filter((s) => s.requests > 0);
    const avg = (f: (s: Sample) => number) =>
      loaded.length === 0 ? 0 : Math.round(loaded.reduce((a, s) => a + f(s), 0) / loaded.length);
    return {
      serverCpuPctAvg: avg((s) => s.serverCpuPct),
      serverRssMbMax: Math.max(0, ...this.series.map((s) => s.serverRssMb)),
      generatorCpuPctAvg: avg((s) => s.generatorCpuPct),
      redisCpuPctAvg: avg((s) => s.redisCpuPct),
      clickhouseCpuPctAvg: avg((s) => s.clickhouseCpuPct),
      otherCpuPctAvg: Object.fromEntries(this.others.map(([name]) => [name, avg((s) => s.otherCpuPct?.[name] ?? 0)])),
    };
  }
}

/** CPU of every local process named `comm` (a store server), summed. */
export function storeMeter(comm: string): CpuMeter {
  const pids = pidsByName(comm);
  return new CpuMeter(() => pids.reduce((a, pid) => a + (readProc(pid)?.cpuSec ?? 0), 0));
}

const fmt = (n: number) => n.toLocaleString('en-US');
