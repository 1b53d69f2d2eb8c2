import type { Answer } from './transport.js';

/** Whole answers worth retrying unchanged: ingest (or a proxy before it) could not store the request now. */
export function retryableAnswer(a: Answer): boolean {
  if (a.status === 502 || a.status === 503 || a.status === 504) return true;
  return a.status === 409 && errorCode(a.body) === 'idempotency_key_in_use';
}

/** Per-event codes in a batch answer that a later attempt can store. */
export function retryableCode(code: string): boolean {
  return code === 'idempotency_key_in_use' || code === 'service_unavailable';
}

export function errorCode(body: string): string | undefined {
  try {
    return (JSON.parse(body) as { error?: { code?: string } }).error?.code;
  } catch {
    return undefined;
  }
}

/** Seconds from a Retry-After header (delta-seconds form), or undefined. */
export function retryAfterMs(header: string | string[] | undefined): number | undefined {
  const v = Array.isArray(header) ? header[0] : header;
  if (v === undefined) return undefined;
  const s = Number(v);
  return Number.isFinite(s) && s >= 0 ? s * 1000 : undefined;
}

/**
 * "Full jitter" exponential backoff: uniformly random up to base·2^attempt, capped; never shorter
 * than what the server asked for with Retry-After. Randomness spreads the retries of many clients
 * that failed together (an ingest restart) instead of having them return in step.
 */
export function backoffMs(attempt: number, baseMs: number, maxMs: number, serverMs?: number): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** attempt);
  const jittered = Math.random() * ceiling;
  return serverMs === undefined ? jittered : Math.max(serverMs, jittered);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
