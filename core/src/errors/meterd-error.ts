/**
 * Base class of every error meterd raises on purpose. `code` is stable and is what code branches
 * on; `retryable` tells a caller whether the same call may succeed later (a store outage) or never
 * will (bad input). Wire-facing codes are listed in docs/errors.md, and a test keeps the two in step.
 */
export class MeterdError extends Error {
  readonly code: string;
  readonly retryable: boolean;
  /** The request field the error is about, when there is one (goes into the JSON error body). */
  readonly field: string | undefined;

  constructor(code: string, message: string, options: { retryable?: boolean; field?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.field = options.field;
  }
}

export function isMeterdError(err: unknown): err is MeterdError {
  return err instanceof MeterdError;
}
