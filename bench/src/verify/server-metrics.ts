import { INGEST_METRICS as M } from '@meterd/core/contracts';
import { parsePrometheus, sumOf, type Sample } from '@meterd/core/metrics';

/**
 * What ingest itself says about a phase, from /metrics before and after it: how many events each
 * group commit (write + fdatasync) and each Redis round trip carried, and how long commits and
 * ClickHouse inserts took. These explain a latency figure: the 202 waits for a Redis claim and a
 * group commit, so their durations bound it from below.
 */
export interface ServerMetrics {
  eventsAccepted: number;
  groupCommits: number;
  eventsPerCommit: number | undefined;
  commitMeanMs: number | undefined;
  commitP99Ms: number | undefined;
  redisRoundTrips: number;
  eventsPerRedisRoundTrip: number | undefined;
  clickhouseInserts: number;
  rowsPerInsert: number | undefined;
  insertMeanMs: number | undefined;
}

type Scrape = Sample[];

export async function scrape(baseUrl: string): Promise<Scrape | undefined> {
  try {
    const res = await fetch(`${baseUrl}/metrics`, { signal: AbortSignal.timeout(5_000) });
    if (!res.ok) return undefined;
    return parsePrometheus(await res.text());
  } catch {
    return undefined;
  }
}

export function diff(before: Scrape, after: Scrape): ServerMetrics {
  const d = (name: string) => sumOf(after, name) - sumOf(before, name);
  const per = (a: number, b: number) => (b > 0 ? Math.round((a / b) * 10) / 10 : undefined);
  const accepted = d(M.accepted) + d(M.duplicate);
  const commits = d(`${M.commitSeconds}_count`);
  const trips = d(M.dedupeRoundTrips);
  const inserts = d(`${M.shipSeconds}_count`);
  return {
    eventsAccepted: accepted,
    groupCommits: commits,
    eventsPerCommit: per(accepted, commits),
    commitMeanMs: per(d(`${M.commitSeconds}_sum`) * 1000, commits),
    commitP99Ms: quantileMs(before, after, M.commitSeconds, 0.99),
    redisRoundTrips: trips,
    eventsPerRedisRoundTrip: per(accepted, trips),
    clickhouseInserts: inserts,
    rowsPerInsert: per(d(M.shippedRows), inserts),
    insertMeanMs: per(d(`${M.shipSeconds}_sum`) * 1000, inserts),
  };
}

/** Upper bound of the histogram bucket holding quantile q of the phase's observations. */
function quantileMs(before: Scrape, after: Scrape, name: string, q: number): number | undefined {
  const le = (s: Scrape): Map<number, number> => {
    const out = new Map<number, number>();
    for (const b of s)
      if (b.name === `${name}_bucket` && b.labels.le !== undefined) {
        const bound = b.labels.le === '+Inf' ? Infinity : Number(b.labels.le);
        out.set(bound, (out.get(bound) ?? 0) + b.value);
      }
    return out;
  };
  const was = le(before);
  const buckets: [number, number][] = [...le(after)].map(([bound, v]) => [bound, v - (was.get(bound) ?? 0)]);
  buckets.sort((a, b) => a[0] - b[0]);
  const total = buckets.at(-1)?.[1] ?? 0;
  if (total === 0) return undefined;
  const hit = buckets.find(([, c]) => c >= q * total)!;
  return hit[0] === Infinity ? undefined : hit[0] * 1000;
}
