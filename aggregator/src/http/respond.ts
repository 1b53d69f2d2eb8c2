import type { ServerResponse } from 'node:http';
import { ApiError, errorBody, isMeterdError, type Logger } from '@meterd/core';

export function sendJson(
  res: ServerResponse,
  status: number,
  body: string,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    ...headers,
  });
  res.end(body);
}

/**
 * The one place an error becomes a response: wire errors keep their code and status; a retryable
 * internal failure (ClickHouse or Postgres unavailable) is a 503; anything else a logged 500 with
 * no internals in the body.
 */
export function sendError(res: ServerResponse, err: unknown, log: Logger): void {
  if (err instanceof ApiError) {
    if (err.status >= 500) log.warn({ err }, 'request failed');
    return sendJson(res, err.status, errorBody(err.code, err.message, err.field));
  }
  if (isMeterdError(err) && err.retryable) {
    log.warn({ err }, 'a store is unavailable');
    return sendJson(res, 503, errorBody('service_unavailable', 'a store is unavailable; retry shortly'), {
      'retry-after': '1',
    });
  }
  log.error({ err }, 'unexpected error');
  sendJson(res, 500, errorBody('internal_error', 'internal error'));
}
