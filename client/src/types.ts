/** One billable event, as POST /api/v1/meter takes it (docs/api.md). */
export interface MeterEvent {
  /** Defaults to the client's workspaceId. */
  workspace_id?: string;
  /** 1–100 letters, digits, `.`, `_`, `-`. */
  event_type: string;
  /**
   * 1–255 characters; the event is counted once per (workspace, event_type, idempotency_key).
   * Generated (a random UUID) when left out, once, when the event is queued: every retry re-sends it.
   */
  idempotency_key?: string;
  /** Whole number; default 1. */
  quantity?: number;
  /** Whole number of minor units of `currency`; default 0. */
  gmv_cents?: number;
  /** ISO 4217; default USD. */
  currency?: string;
  /** RFC 3339 with a zone, or a Date. Set to the time of queueing when left out, so a retry keeps its hour. */
  occurred_at?: string | Date;
  /**
   * String properties meters group, filter and aggregate by (docs/api.md): at most 16 keys of
   * 1–64 letters, digits, `.`, `_`, `-`; values of at most 256 characters, no control characters.
   * Numbers a meter sums or maxes are sent as decimal integer strings (`{ "tokens": "1200" }`).
   */
  properties?: Readonly<Record<string, string>>;
}

/** What ingest answered for one event. */
export type MeterResult =
  | { status: 'accepted' | 'duplicate'; id: string; idempotency_key: string }
  | { status: 'rejected'; code: string; message: string; field?: string; idempotency_key: string };

/** The plan's event quota, from the X-Plan-Events-* headers of the latest answer; null limits mean unlimited. */
export interface Quota {
  used: number;
  limit: number | null;
  remaining: number | null;
}

export interface RetryInfo {
  path: string;
  /** The attempt that failed, from 1. */
  attempt: number;
  reason: string;
  /** Events re-sent (1 for a single call). */
  events: number;
  delayMs: number;
}

export interface ClientOptions {
  /** meterd's public base URL, e.g. http://127.0.0.1:8080 (the front router) or ingest's own. */
  baseUrl: string;
  /** A workspace key with the meter:write scope (sks_…). */
  apiKey: string;
  /** The workspace events are metered for when they do not name one. */
  workspaceId: string;
  /** Events per batch request, 1–100 (ingest's limit); default 100. */
  batchSize?: number;
  /** Longest an event waits in the queue for its batch to fill; default 20 ms. */
  flushIntervalMs?: number;
  /** Batch requests in flight at once; default 8. */
  concurrency?: number;
  /** Events queued (not yet sent) at most; `meter()` waits beyond (back-pressure); default 10,000. */
  maxQueued?: number;
  /** Attempts per request, the first included; default 10. */
  maxAttempts?: number;
  /** First retry delay; it doubles each attempt, with full jitter; default 100 ms. */
  retryBaseMs?: number;
  /** Longest retry delay (Retry-After may ask for more); default 10 s. */
  retryMaxMs?: number;
  /** Per-request deadline; default 10 s. */
  timeoutMs?: number;
  /** Called before each retry, with why (an HTTP status and code, a per-event code, or `network_error`) and the delay chosen. */
  onRetry?: (retry: RetryInfo) => void;
  /** Called with each answer's quota headers. */
  onQuota?: (quota: Quota) => void;
  /**
   * When true, once ingest reports the quota used up (remaining 0 or plan_quota_exceeded), `meter()`
   * fails fast with QuotaExhaustedError instead of queueing events ingest would refuse; a probe
   * batch is let through every `quotaProbeMs` (default 60 s) to learn when the quota is back.
   */
  quotaBackpressure?: boolean;
  quotaProbeMs?: number;
  /** Close (flush) on SIGTERM and SIGINT, then let the process exit; default false. */
  flushOnSignals?: boolean;
}
