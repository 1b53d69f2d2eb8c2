import { MeterdError } from './meterd-error.js';
import { ERROR_CODES, type ErrorCode } from './codes.js';

/** An error that is meant for the client: its code is in the wire registry and maps to a status. */
export class ApiError extends MeterdError {
  readonly status: number;
  constructor(
    code: ErrorCode,
    message: string,
    field?: string,
    options: { retryable?: boolean; cause?: unknown } = {},
  ) {
    super(code, message, { ...options, ...(field === undefined ? {} : { field }) });
    this.status = ERROR_CODES[code].status;
  }
}

/** A call to another service (Stripe, Shopify) failed: 502 upstream_error, worth retrying. */
export function upstreamError(message: string, cause?: unknown): ApiError {
  return new ApiError('upstream_error', message, undefined, {
    retryable: true,
    ...(cause === undefined ? {} : { cause }),
  });
}

/** The API's error body (docs/api.md): `{ "error": { "code", "message", "field"? } }`. */
export function errorBody(code: string, message: string, field?: string): string {
  return JSON.stringify({ error: field === undefined ? { code, message } : { code, message, field } });
}
