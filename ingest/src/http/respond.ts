import type { HttpResponse } from 'uWebSockets.js';
import { ERROR_CODES, errorBody, type ErrorCode } from '@meterd/core/errors';

/**
 * Per-request state uWS does not keep. `aborted` turns true when the client went away or the
 * response was sent (uWS throws on any later write); `settle` runs once either way, so the server
 * knows how many requests are still in flight when it drains.
 */
export class Ctx {
  aborted = false;
  private open = true;
  constructor(private readonly tracker: { inflight: number }) {
    tracker.inflight++;
  }
  settle(): void {
    this.aborted = true;
    if (this.open) {
      this.open = false;
      this.tracker.inflight--;
    }
  }
}

// Status lines built once (uWS writes them verbatim).
const STATUS: Record<number, string> = {
  200: '200 OK',
  202: '202 Accepted',
  400: '400 Bad Request',
  401: '401 Unauthorized',
  403: '403 Forbidden',
  404: '404 Not Found',
  405: '405 Method Not Allowed',
  409: '409 Conflict',
  413: '413 Payload Too Large',
  415: '415 Unsupported Media Type',
  429: '429 Too Many Requests',
  500: '500 Internal Server Error',
  503: '503 Service Unavailable',
};

/** The plan headers (docs/api.md): what the workspace used this period, its limit, and what remains. */
export interface PlanUsage {
  used: number;
  limit: number | null;
}

/**
 * Writes a whole JSON response. Called from async callbacks, so it corks: status, headers and body
 * leave in one syscall (uWS: writes outside a cork from async code are separate sends).
 */
export function sendJson(
  res: HttpResponse,
  ctx: Ctx,
  status: number,
  body: string,
  usage?: PlanUsage,
  extra?: [string, string],
): void {
  if (ctx.aborted) return;
  ctx.settle();
  res.cork(() => {
    res.writeStatus(STATUS[status] ?? `${status} Status`);
    res.writeHeader('content-type', 'application/json');
    if (usage !== undefined && !Number.isNaN(usage.used)) {
      res.writeHeader('x-plan-events-used', String(usage.used));
      if (usage.limit === null) {
        res.writeHeader('x-plan-events-limit', 'unlimited');
        res.writeHeader('x-plan-events-remaining', 'unlimited');
      } else {
        res.writeHeader('x-plan-events-limit', String(usage.limit));
        res.writeHeader('x-plan-events-remaining', String(Math.max(0, usage.limit - usage.used)));
      }
    }
    if (extra !== undefined) res.writeHeader(extra[0], extra[1]);
    res.end(body);
  });
}

export function sendError(
  res: HttpResponse,
  ctx: Ctx,
  code: ErrorCode,
  message: string,
  field?: string,
  usage?: PlanUsage,
  closeConnection = false,
): void {
  if (ctx.aborted) return;
  const retry: [string, string] | undefined =
    code === 'idempotency_key_in_use' || code === 'service_unavailable' ? ['retry-after', '1'] : undefined;
  if (closeConnection) return sendAndClose(res, ctx, code, message, field);
  sendJson(res, ctx, ERROR_CODES[code].status, errorBody(code, message, field), usage, retry);
}

/**
 * Answers without reading (the rest of) the body, then closes the connection, so the unread bytes
 * are never parsed as a request: for oversized bodies, and for requests refused before their key
 * is known, whose bodies the server never spends time on.
 */
export function sendAndClose(
  res: HttpResponse,
  ctx: Ctx,
  code: ErrorCode,
  message: string,
  field?: string,
  retryAfterS?: number,
): void {
  if (ctx.aborted) return;
  ctx.settle();
  res.cork(() => {
    res.writeStatus(STATUS[ERROR_CODES[code].status]!);
    res.writeHeader('content-type', 'application/json');
    if (retryAfterS !== undefined) res.writeHeader('retry-after', String(retryAfterS));
    res.end(errorBody(code, message, field), true);
  });
}
