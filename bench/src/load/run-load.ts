import autocannon, { type AcRequest, type AcResult } from 'autocannon';
import { selfCpuSeconds } from './procstat.js';
import { generatorUse, LoadSampler, type LoadSummary } from './sampler.js';
import type { AckCounters } from './workloads.js';

export type { LoadSummary, Sample } from './sampler.js';

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
  /** Further processes whose CPU is sampled, by name (e.g. the aggregator). */
  watch?: Record<string, number>;
}

/**
 * Runs autocannon once, in this process, with a one-line progress display and a per-second series.
 * Its CPU is this process's: one thread, so a run near 100 % of one core measures autocannon.
 */
export function runLoad(o: LoadOptions): Promise<LoadSummary> {
  const sampler = new LoadSampler({
    label: o.label,
    durationSec: o.durationSec,
    generatorCpuSec: selfCpuSeconds,
    ...(o.serverPid === undefined ? {} : { serverPid: o.serverPid }),
    ...(o.watch === undefined ? {} : { watch: o.watch }),
    ...(o.progress === undefined ? {} : { progress: o.progress }),
  });
  let second: number[] = [];
  let reqs = 0;
  let non2xx = 0;
  let lastEvents = 0;
  const eventsOf = () => (o.counters ? o.counters.stored + o.counters.duplicate : 0);

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
        resolve(summarise(o, result, sampler, eventsOf()));
      },
    );
    inst.on('response', (_client: unknown, status: number, _bytes: number, ms: number) => {
      reqs++;
      if (status < 200 || status > 299) non2xx++;
      second.push(ms);
    });
    const tick = (): void => {
      const lat = second.sort((a, b) => a - b);
      const events = eventsOf();
      sampler.tick({
        requests: reqs,
        events: events - lastEvents,
        non2xx,
        p50Ms: pct(lat, 0.5),
        p99Ms: pct(lat, 0.99),
      });
      lastEvents = events;
      reqs = 0;
      non2xx = 0;
      second = [];
    };
    const timer = setInterval(tick, 1000);
  });
}

function summarise(o: LoadOptions, r: AcResult, sampler: LoadSampler, events: number): LoadSummary {
  const statusCounts: Record<string, number> = {};
  for (const [code, v] of Object.entries(r.statusCodeStats ?? {})) statusCounts[code] = v.count;
  const duration = r.duration || o.durationSec;
  const a = sampler.averages();
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
      cpuPctAvg: o.serverPid === undefined ? undefined : a.serverCpuPctAvg,
      rssMbMax: o.serverPid === undefined ? undefined : a.serverRssMbMax,
    },
    generatorCpuPctAvg: a.generatorCpuPctAvg,
    generator: generatorUse('autocannon', 1, 1, a.generatorCpuPctAvg, r.requests.total, duration),
    redisCpuPctAvg: a.redisCpuPctAvg,
    clickhouseCpuPctAvg: a.clickhouseCpuPctAvg,
    otherCpuPctAvg: a.otherCpuPctAvg,
    series: sampler.series,
  };
}

/** The q-quantile of ascending values (0 when empty). */
export function pct(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}
