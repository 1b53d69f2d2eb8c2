import { MeterdError } from '@meterd/core/errors';

/** billing-sync's error codes (internal: billing-sync serves no API, so none are wire codes). */
export class UsageReadError extends MeterdError {
  constructor(action: string, cause: unknown) {
    super('METERD_BILLING_USAGE_READ_FAILED', `${action}: ${(cause as Error)?.message ?? String(cause)}`, {
      retryable: true,
      cause,
    });
  }
}

export class UsageSourceUnavailableError extends MeterdError {
  constructor(message: string) {
    super('METERD_BILLING_USAGE_SOURCE_UNAVAILABLE', message, { retryable: false });
  }
}
