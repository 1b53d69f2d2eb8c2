import { ApiError, errorBody, isMeterdError } from '@meterd/core/errors';
import { type Logger } from '@meterd/core/log';

export interface ErrorReply {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * The one place an error becomes a response: wire errors keep their code and status; a retryable
 * internal failure (ClickHouse or Postgres unavailable) is a 503; anything else a logged 500 with
 * no internals in the body.
 */
export function errorReply(err: unknown, log: Logger): ErrorReply {
  if (err instanceof ApiError) {
    if (err.status >= 500) log.warn({ err }, 'request failed');
    return { status: err.status, headers: {}, body: errorBody(err.code, err.message, err.field) };
  }
  if (isMeterdError(err) && err.retryable) {
    log.warn({ err }, 'a store is unavailable');
    return {
      status: 503,
      headers: { 'retry-after': '1' },
      body: errorBody('service_unavailable', 'a store is unavailable; retry shortly'),
    };
  }
  log.error({ err }, 'unexpected error');
  return { status: 500, headers: {}, body: errorBody('internal_error', 'internal error') };
}
