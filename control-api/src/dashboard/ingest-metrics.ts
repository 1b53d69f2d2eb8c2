import { INGEST_METRICS } from '@meterd/core/contracts';
import { parsePrometheus } from '@meterd/core/metrics';

/**
 * Reads ingest's Prometheus /metrics. Its counters are per ingest process and cover every
 * workspace (labelling them by workspace would make series grow with the customer count), so the
 * dashboard shows them as platform-wide figures and says so.
 */
export interface IngestSnapshot {
  source: string;
  reachable: boolean;
  scrapedAt: number;
  accepted: number;
  duplicate: number;
  rejected: Record<string, number>;
}

export function snapshotOf(source: string, text: string, at: number): IngestSnapshot {
  const s: IngestSnapshot = { source, reachable: true, scrapedAt: at, accepted: 0, duplicate: 0, rejected: {} };
  for (const m of parsePrometheus(text)) {
    if (m.name === INGEST_METRICS.accepted) s.accepted += m.value;
    else if (m.name === INGEST_METRICS.duplicate) s.duplicate += m.value;
    else if (m.name === INGEST_METRICS.rejected && m.value > 0) {
      const reason = m.labels.reason ?? 'unknown';
      s.rejected[reason] = (s.rejected[reason] ?? 0) + m.value;
    }
  }
  return s;
}

export async function scrapeIngest(baseUrl: string, timeoutMs = 2_000): Promise<IngestSnapshot> {
  const url = new URL('/metrics', baseUrl).toString();
  const at = Date.now();
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    if (!res.ok) throw new Error(`status ${res.status}`);
    return snapshotOf(baseUrl, await res.text(), at);
  } catch {
    return { source: baseUrl, reachable: false, scrapedAt: at, accepted: 0, duplicate: 0, rejected: {} };
  }
}
