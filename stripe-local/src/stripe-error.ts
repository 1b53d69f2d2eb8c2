/**
 * Errors in Stripe's wire shape, `{ "error": { "type", "code"?, "message", "param"? } }`, which is
 * what the real `stripe` SDK parses into StripeInvalidRequestError, StripeRateLimitError and so on.
 * (Stripe's shape, not meterd's: this server impersonates Stripe, so meterd's error registry does
 * not apply to it.)
 */
export type StripeErrorType = 'invalid_request_error' | 'api_error' | 'idempotency_error' | 'temporary_session_expired';

export class StripeHttpError extends Error {
  constructor(
    readonly status: number,
    readonly type: StripeErrorType,
    message: string,
    readonly code?: string,
    readonly param?: string,
    /** Value of the Stripe-Should-Retry header, when Stripe would send one. */
    readonly shouldRetry?: boolean,
  ) {
    super(message);
  }

  body(): string {
    const e: Record<string, string> = { type: this.type, message: this.message };
    if (this.code !== undefined) e.code = this.code;
    if (this.param !== undefined) e.param = this.param;
    return JSON.stringify({ error: e });
  }
}

export const invalid = (message: string, param?: string, code?: string): StripeHttpError =>
  new StripeHttpError(400, 'invalid_request_error', message, code ?? (param === undefined ? undefined : 'parameter_invalid'), param);

export const missingParam = (param: string): StripeHttpError =>
  new StripeHttpError(400, 'invalid_request_error', `Missing required param: ${param}.`, 'parameter_missing', param);

export const notFound = (what: string, id: string, param = 'id'): StripeHttpError =>
  new StripeHttpError(404, 'invalid_request_error', `No such ${what}: '${id}'`, 'resource_missing', param);

export const rateLimited = (): StripeHttpError =>
  new StripeHttpError(429, 'invalid_request_error', 'Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.', 'rate_limit');
