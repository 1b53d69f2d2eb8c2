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

type Scrape = Map<string, number>;

export async function scrape(baseUrl: string): Promise<Scrape | undefined> {
  try {
    const res = await fetch(`${baseUrl}/metrics`, { signal: AbortSignal.timeout(5_000) });
    if (!res.ok) return undefined;
    const out: Scrape = new Map();
    for (const line of (await res.text()).split('\n')) {
      if (line.startsWith('#') || line === '') continue;
      const sp = line.lastIndexOf(' ');
      out.set(line.slice(0, sp), Number(line.slice(sp + 1)));
    }
    return out;
  } catch {
    return undefined;
  }
}

export function diff(before: Scrape, after: Scrape): ServerMetrics {
  const d = (name: string) => (after.get(name) ?? 0) - (before.get(name) ?? 0);
  const per = (a: number, b: number) => (b > 0 ? Math.round((a / b) * 10) / 10 : undefined);
  const accepted = d('meterd_ingest_events_accepted_total') + d('meterd_ingest_events_duplicate_total');
  const commits = d('meterd_ingest_group_commit_seconds_count');
  const trips = d('meterd_ingest_dedupe_round_trips_total');
  const inserts = d('meterd_ingest_flush_seconds_count');
  return {
    eventsAccepted: accepted,
    groupCommits: commits,
    eventsPerCommit: per(accepted, commits),
    commitMeanMs: per(d('meterd_ingest_group_commit_seconds_sum') * 1000, commits),
    commitP99Ms: quantileMs(before, after, 'meterd_ingest_group_commit_seconds', 0.99),
    redisRoundTrips: trips,
    eventsPerRedisRoundTrip: per(accepted, trips),
    clickhouseInserts: inserts,
    rowsPerInsert: per(d('meterd_ingest_shipped_rows_total'), inserts),
    insertMeanMs: per(d('meterd_ingest_flush_seconds_sum') * 1000, inserts),
  };
}

/** Upper bound of the histogram bucket holding quantile q of the phase's observations. */
function quantileMs(before: Scrape, after: Scrape, name: string, q: number): number | undefined {
  const buckets: [number, number][] = [];
  for (const [k, v] of after) {
    const m = new RegExp(`^${name}_bucket\\{(?:.*,)?le="([^"]+)"\\}$`).exec(k);
    if (m) buckets.push([m[1] === '+Inf' ? Infinity : Number(m[1]), v - (before.get(k) ?? 0)]);
  }
  buckets.sort((a, b) => a[0] - b[0]);
  const total = buckets.at(-1)?.[1] ?? 0;
  if (total === 0) return undefined;
  const hit = buckets.find(([, c]) => c >= q * total)!;
  return hit[0] === Infinity ? undefined : hit[0] * 1000;
}
