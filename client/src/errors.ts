/** A request that failed for good: a non-retryable answer, or retries exhausted. `code` is ingest's error code or `network_error`. */
export class MeterdRequestError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly status: number | null,
    readonly attempts: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'MeterdRequestError';
  }
}

/** `quotaBackpressure` is on and the plan's quota is used up: the event was not queued. */
export class QuotaExhaustedError extends Error {
  readonly code = 'plan_quota_exceeded';
  constructor() {
    super("the workspace's plan quota is used up; the event was not queued");
    this.name = 'QuotaExhaustedError';
  }
}

/** The client was closed: no event is queued after close(). */
export class ClientClosedError extends Error {
  readonly code = 'client_closed';
  constructor() {
    super('the meterd client is closed');
    this.name = 'ClientClosedError';
  }
}
