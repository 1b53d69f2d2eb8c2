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

/**
 * API v2's error shape, `{ "error": { "code", "message", "type"? } }` (no `param`), with v2's own
 * codes (`no_meter`, `duplicate_meter_event`, `payload_no_customer_defined`, …): the v2.error.*
 * schemas of Stripe's OpenAPI spec (https://github.com/stripe/openapi, spec3 `v2.error.*`) and
 * https://docs.stripe.com/api-v2-overview. The meter event errors carry no `type`; stripe-node
 * then raises a StripeError whose `code` is the v2 code.
 */
export class StripeV2Error extends StripeHttpError {
  constructor(
    status: number,
    code: string,
    message: string,
    readonly v2Type?: StripeErrorType,
    shouldRetry?: boolean,
  ) {
    super(status, v2Type ?? 'invalid_request_error', message, code, undefined, shouldRetry);
  }

  override body(): string {
    return JSON.stringify({
      error: { ...(this.v2Type === undefined ? {} : { type: this.v2Type }), code: this.code, message: this.message },
    });
  }
}

/** Any error answered on a /v2/ route, in v2's shape (a v1-style error keeps its type and code). */
export function asV2(err: StripeHttpError): StripeV2Error {
  if (err instanceof StripeV2Error) return err;
  return new StripeV2Error(err.status, err.code ?? 'invalid_request', err.message, err.type, err.shouldRetry);
}

export const invalid = (message: string, param?: string, code?: string): StripeHttpError =>
  new StripeHttpError(
    400,
    'invalid_request_error',
    message,
    code ?? (param === undefined ? undefined : 'parameter_invalid'),
    param,
  );

export const missingParam = (param: string): StripeHttpError =>
  new StripeHttpError(400, 'invalid_request_error', `Missing required param: ${param}.`, 'parameter_missing', param);

export const notFound = (what: string, id: string, param = 'id'): StripeHttpError =>
  new StripeHttpError(404, 'invalid_request_error', `No such ${what}: '${id}'`, 'resource_missing', param);

export const unknownParam = (param: string): StripeHttpError =>
  new StripeHttpError(400, 'invalid_request_error', `Received unknown parameter: ${param}`, 'parameter_unknown', param);

export const rateLimited = (): StripeHttpError =>
  new StripeHttpError(
    429,
    'invalid_request_error',
    'Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.',
    'rate_limit',
  );
