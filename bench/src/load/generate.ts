import type { Generator } from '../args.js';
import { runLoad, type LoadSummary } from './run-load.js';
import { runWrk } from './wrk.js';
import type { Workload } from './workloads.js';

export interface GenerateOptions {
  label: string;
  url: string;
  connections: number;
  durationSec: number;
  /** A fresh workload per call: its tracker records this run's keys. */
  work: Workload;
  /** Requests per second over all connections; undefined = as fast as the server answers. */
  overallRate?: number;
  serverPid?: number;
  watch?: Record<string, number>;
  progress?: NodeJS.WriteStream;
}

/**
 * One load run with the chosen generator. A fixed rate needs autocannon (wrk has no rate limit),
 * so a run given one uses autocannon whatever was chosen; the summary names the tool that ran.
 */
export function generate(generator: Generator, o: GenerateOptions): Promise<LoadSummary> {
  const common = {
    label: o.label,
    url: o.url,
    connections: o.connections,
    durationSec: o.durationSec,
    ...(o.serverPid === undefined ? {} : { serverPid: o.serverPid }),
    ...(o.watch === undefined ? {} : { watch: o.watch }),
    ...(o.progress === undefined ? {} : { progress: o.progress }),
  };
  if (generator === 'wrk' && o.overallRate === undefined) return runWrk({ ...common, work: o.work });
  return runLoad({
    ...common,
    requests: o.work.requests,
    counters: o.work.counters,
    ...(o.overallRate === undefined ? {} : { overallRate: o.overallRate }),
  });
}
