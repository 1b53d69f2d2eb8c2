import { INGEST_METRICS } from '@meterd/core/contracts';

/**
 * Waits until ingest reports no unshipped spool rows (INGEST_METRICS.spoolRows on
 * /metrics, summed over threads), i.e. every acknowledged event has been inserted into ClickHouse.
 * Returns the milliseconds waited, or undefined if the gauge did not reach zero in time.
 */
export async function waitForSpool(baseUrl: string, timeoutMs = 120_000): Promise<number | undefined> {
  const started = Date.now();
  let zeros = 0;
  while (Date.now() - started < timeoutMs) {
    const rows = await unshippedRows(baseUrl);
    // Twice in a row: the gauge is refreshed after each ship and once a second by the health check.
    zeros = rows === 0 ? zeros + 1 : 0;
    if (zeros >= 2) return Date.now() - started;
    await new Promise((r) => setTimeout(r, 250));
  }
  return undefined;
}

const UNSHIPPED = new RegExp(`^${INGEST_METRICS.spoolRows}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'gm');

export async function unshippedRows(baseUrl: string): Promise<number | undefined> {
  try {
    const res = await fetch(`${baseUrl}/metrics`, { signal: AbortSignal.timeout(5_000) });
    const text = await res.text();
    let sum: number | undefined;
    for (const m of text.matchAll(UNSHIPPED)) sum = (sum ?? 0) + Number(m[1]);
    return sum;
  } catch {
    return undefined;
  }
}
