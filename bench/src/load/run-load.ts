import autocannon, { type AcRequest, type AcResult } from 'autocannon';
import { CpuMeter, pidsByName, readProc, selfCpuSeconds } from './procstat.js';
import type { AckCounters } from './workloads.js';

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
  generatorCpuPctAvg: number;
  redisCpuPctAvg: number;
  clickhouseCpuPctAvg: number;
  series: Sample[];
}

export interface LoadOptions {
  label: string;
  url: string;
  connections: number;
  durationSec: number;
  requests: AcRequest[];
  /** Process whose CPU and RSS are sampled (a child this bench started); undefined for a remote target. */
  serverPid?: number;
  counters?: AckCounters;
  /** Requests per second over all connections; undefined = as fast as the server answers. */
  overallRate?: number;
  /** Progress line target; the quick check in tests passes undefined to stay quiet. */
  progress?: NodeJS.WriteStream;
}

/** Runs autocannon once, with a one-line progress display and a per-second series. */
export function runLoad(o: LoadOptions): Promise<LoadSummary> {
  const server = o.serverPid === undefined ? undefined : new CpuMeter(() => readProc(o.serverPid!)?.cpuSec);
  const self = new CpuMeter(selfCpuSeconds);
  const storeMeter = (comm: string) => {
    const pids = pidsByName(comm);
    return new CpuMeter(() => pids.reduce((a, pid) => a + (readProc(pid)?.cpuSec ?? 0), 0));
  };
  const redisCpu = storeMeter('redis-server');
  const chCpu = storeMeter('clickhouse-serv');
  const series: Sample[] = [];
  let second: number[] = [];
  let reqs = 0;
  let non2xx = 0;
  let lastEvents = 0;
  const eventsOf = () => (o.counters ? o.counters.stored + o.counters.duplicate : 0);
  const started = performance.now();

  return new Promise((resolve, reject) => {
    const inst = autocannon(
      {
        url: o.url,
        connections: o.connections,
        duration: o.durationSec,
        // Long enough that no request times out under load: a timeout resets the connection and its
        // answer is lost, which would leave keys of unknown fate (counted, but inexact).
        timeout: 30,
        requests: o.requests,
        ...(o.overallRate === undefined ? {} : { overallRate: o.overallRate }),
      },
      (err, result) => {
        clearInterval(timer);
        tick();
        if (o.progress) o.progress.write('\n');
        if (err) return reject(err);
        resolve(summarise(o, result, series, eventsOf()));
      },
    );
    inst.on('response', (_client: unknown, status: number, _bytes: number, ms: number) => {
      reqs++;
      if (status < 200 || status > 299) non2xx++;
      second.push(ms);
    });
    const tick = (): void => {
      const lat = second.sort((a, b) => a - b);
      const proc = o.serverPid === undefined ? undefined : readProc(o.serverPid);
      const events = eventsOf();
      const s: Sample = {
        t: Math.round((performance.now() - started) / 100) / 10,
        requests: reqs,
        events: events - lastEvents,
        p50Ms: pct(lat, 0.5),
        p99Ms: pct(lat, 0.99),
        non2xx,
        serverCpuPct: server ? Math.round(server.sample()) : 0,
        serverRssMb: proc ? Math.round(proc.rssBytes / 2 ** 20) : 0,
        generatorCpuPct: Math.round(self.sample()),
        redisCpuPct: Math.round(redisCpu.sample()),
        clickhouseCpuPct: Math.round(chCpu.sample()),
      };
      if (reqs > 0 || series.length > 0) series.push(s);
      lastEvents = events;
      reqs = 0;
      non2xx = 0;
      second = [];
      if (o.progress) {
        const line =
          `[${o.label}] ${s.t.toFixed(0)}s/${o.durationSec}s  ${fmt(s.requests)} req/s  ${fmt(s.events)} ev/s  ` +
          `p50 ${s.p50Ms.toFixed(1)} ms  p99 ${s.p99Ms.toFixed(1)} ms  non-2xx ${s.non2xx}  server cpu ${s.serverCpuPct}%  bench cpu ${s.generatorCpuPct}%  redis ${s.redisCpuPct}%  clickhouse ${s.clickhouseCpuPct}%`;
        o.progress.write(o.progress.isTTY ? `\r\x1b[K${line}` : `${line}\n`);
      }
    };
    const timer = setInterval(tick, 1000);
  });
}

function summarise(o: LoadOptions, r: AcResult, series: Sample[], events: number): LoadSummary {
  const statusCounts: Record<string, number> = {};
  for (const [code, v] of Object.entries(r.statusCodeStats ?? {})) statusCounts[code] = v.count;
  const cpu = series.filter((s) => s.requests > 0);
  const avg = (f: (s: Sample) => number) =>
    cpu.length === 0 ? 0 : Math.round(cpu.reduce((a, s) => a + f(s), 0) / cpu.length);
  const duration = r.duration || o.durationSec;
  return {
    label: o.label,
    durationSec: duration,
    connections: o.connections,
    requests: r.requests.total,
    requestsPerSec: Math.round(r.requests.total / duration),
    eventsPerSec: o.counters ? Math.round(events / duration) : undefined,
    latencyMs: { p50: r.latency.p50, p90: r.latency.p90, p99: r.latency.p99, max: r.latency.max, mean: r.latency.mean },
    statusCounts,
    errors: r.errors,
    timeouts: r.timeouts,
    server: {
      pid: o.serverPid,
      cpuPctAvg: o.serverPid === undefined ? undefined : avg((s) => s.serverCpuPct),
      rssMbMax: o.serverPid === undefined ? undefined : Math.max(0, ...series.map((s) => s.serverRssMb)),
    },
    generatorCpuPctAvg: avg((s) => s.generatorCpuPct),
    redisCpuPctAvg: avg((s) => s.redisCpuPct),
    clickhouseCpuPctAvg: avg((s) => s.clickhouseCpuPct),
    series,
  };
}

function pct(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

const fmt = (n: number) => n.toLocaleString('en-US');
