import type { HttpRequest, HttpResponse } from 'uWebSockets.js';
import { hasScope, type Authenticator, type Principal } from '@meterd/core/auth';
import { ApiError, statusOf, type ErrorCode } from '@meterd/core/errors';
import { parseMeterJson, Rejection, validateMeterEvent, type MeterEvent } from '@meterd/core/event';
import { type Logger } from '@meterd/core/log';
import { PLAN_QUOTAS, periodOf } from '@meterd/core/plans';
import type { RejectionLog } from '@meterd/core/store';
import type { Deduper } from '../dedupe/deduper.js';
import type { IngestMetrics } from '../metrics.js';
import type { EventResult, Pipeline, SubmitResult } from '../pipeline.js';
import { rowJson } from '../rows.js';
import { readBody } from './body.js';
import { Ctx, sendAndClose, sendError, sendJson, type PlanUsage } from './respond.js';
import type { AuthFailureLimiter } from './auth-failures.js';
import { clientAddress } from './client-address.js';

export const MAX_BATCH_EVENTS = 100;

export interface MeterRouteOptions {
  maxBodyBytes: number;
  maxBatchBodyBytes: number;
  /** Key lookups per client address that failures drain (this thread's); past the budget, lookups are refused with 429. */
  authFailures: AuthFailureLimiter;
  /** Proxies whose X-Forwarded-For names the client (exact addresses). */
  trustedProxy: (address: string) => boolean;
  /** Where refused events of a known workspace are noted for the event explorer (buffered, written off the request path). */
  rejections?: RejectionLog;
}

/**
 * POST /api/v1/meter and /api/v1/meter/batch. The handler is a short list of steps: read the
 * headers (uWS frees `req` when this function returns), authenticate, read the body, validate, hand
 * the events to the pipeline, answer. Errors before the pipeline change nothing anywhere.
 */
export class MeterRoutes {
  /** Requests read but not yet answered or aborted; close() waits for it to reach zero. */
  readonly tracker = { inflight: 0 };
  /**
   * Set when the thread drains. The listening socket is closed by then, but keep-alive connections
   * still deliver requests: those get an immediate 503 (nothing stored), so the drain ends and the
   * client's retry reaches another instance.
   */
  draining = false;

  constructor(
    private readonly auth: Authenticator,
    private readonly pipeline: Pipeline,
    private readonly deduper: Deduper,
    private readonly metrics: IngestMetrics,
    private readonly log: Logger,
    private readonly opts: MeterRouteOptions,
  ) {}

  handle(res: HttpResponse, req: HttpRequest, batch: boolean): void {
    const ctx = new Ctx(this.tracker);
    res.onAborted(() => ctx.settle());
    if (this.draining) {
      sendError(res, ctx, 'service_unavailable', 'this instance is shutting down; retry');
      return;
    }
    this.metrics.requests[batch ? 'batch' : 'meter']!.inc();
    const authz = req.getHeader('authorization');
    const ctype = req.getHeader('content-type');
    const cap = batch ? this.opts.maxBatchBodyBytes : this.opts.maxBodyBytes;
    const declared = req.getHeader('content-length');
    // The key is checked from the headers before any of the body is read: a request that cannot
    // authenticate costs neither the body's bytes nor (past its address's budget) a query.
    const known = this.auth.cached(authz);
    if (known instanceof ApiError) return this.refuse(res, ctx, known, declared);
    if (known !== undefined) {
      readBody(res, ctx, cap, declared, (body) => this.authenticated(res, ctx, known, ctype, body, batch));
      return;
    }
    const addr = clientAddress(res, req, this.opts.trustedProxy);
    const admission = this.opts.authFailures.take(addr, Date.now());
    if (admission > 0) {
      this.metrics.rejected.too_many_auth_failures!.inc();
      sendAndClose(
        res,
        ctx,
        'too_many_auth_failures',
        'too many unknown API keys from this address; retry after the Retry-After seconds',
        undefined,
        admission,
      );
      return;
    }
    this.lookUp(res, ctx, authz, addr, admission, ctype, cap, declared, batch);
  }

  /** A key that needs a query: the body waits (paused, at most uWS's read buffer taken in) until the key is known. */
  private lookUp(
    res: HttpResponse,
    ctx: Ctx,
    authz: string,
    addr: string,
    admission: number,
    ctype: string,
    cap: number,
    declared: string,
    batch: boolean,
  ): void {
    let principal: Principal | undefined;
    let body: string | undefined;
    readBody(res, ctx, cap, declared, (b) => {
      body = b;
      if (principal !== undefined) this.authenticated(res, ctx, principal, ctype, body, batch);
    });
    if (ctx.aborted) return; // readBody refused a declared length over the cap
    res.pause();
    Promise.resolve(this.auth.authenticate(authz))
      .then((p) => {
        // Only an unknown key counts against the address: a lookup that could not run (503) was not its fault.
        this.opts.authFailures.settle(
          addr,
          admission,
          !(p instanceof ApiError && p.code === 'invalid_api_key'),
          Date.now(),
        );
        if (ctx.aborted) return;
        // Resumed in every case: a paused socket would also stall the connection's next request. A
        // body completing inside resume() is handled by readBody's callback once `principal` is set.
        const ready = body;
        if (p instanceof ApiError) {
          res.resume();
          return this.refuse(res, ctx, p, declared);
        }
        principal = p;
        res.resume();
        if (ready !== undefined) this.authenticated(res, ctx, p, ctype, ready, batch);
      })
      .catch((err: unknown) => this.fail(res, ctx, err));
  }

  /** 401 (or 503 when keys cannot be checked) before the body: answered, and the connection closed unless it carried no body. */
  private refuse(res: HttpResponse, ctx: Ctx, err: ApiError, declared: string): void {
    const code = err.code as ErrorCode;
    this.metrics.rejected[code]?.inc();
    if (declared === '0') sendError(res, ctx, code, err.message);
    else sendAndClose(res, ctx, code, err.message, undefined, code === 'service_unavailable' ? 1 : undefined);
  }

  private authenticated(res: HttpResponse, ctx: Ctx, p: Principal, ctype: string, body: string, batch: boolean): void {
    if (!hasScope(p, 'meter:write'))
      return this.reject(res, ctx, 'insufficient_scope', 'this key lacks the meter:write scope');
    if (!isJson(ctype)) return this.reject(res, ctx, 'unsupported_media_type', 'send Content-Type: application/json');
    let doc: unknown;
    try {
      doc = parseMeterJson(body);
    } catch {
      return this.reject(res, ctx, 'invalid_json', 'the body is not valid JSON');
    }
    if (batch) this.batch(res, ctx, p, doc);
    else this.single(res, ctx, p, doc);
  }

  private single(res: HttpResponse, ctx: Ctx, p: Principal, doc: unknown): void {
    const now = Date.now();
    const ev = validateMeterEvent(doc, now);
    if (ev instanceof Rejection) {
      const ws = p.workspaceId;
      if (ws === null) return this.reject(res, ctx, ev.code, ev.message, ev.field);
      this.note(ws, ev.code, ev.message, ev.field, doc, now);
      return this.withUsage(ws, p, now, (usage) => this.reject(res, ctx, ev.code, ev.message, ev.field, usage));
    }
    if (p.workspaceId !== null && ev.workspace_id !== p.workspaceId) {
      this.note(
        p.workspaceId,
        'workspace_mismatch',
        "workspace_id must be the API key's workspace",
        'workspace_id',
        doc,
        now,
      );
      return this.withUsage(p.workspaceId, p, now, (usage) =>
        this.reject(
          res,
          ctx,
          'workspace_mismatch',
          "workspace_id must be the API key's workspace",
          'workspace_id',
          usage,
        ),
      );
    }
    this.limitFor(p, ev.workspace_id).then(
      (limit) => {
        if (limit === undefined)
          return this.reject(res, ctx, 'workspace_not_found', `no workspace ${ev.workspace_id}`, 'workspace_id');
        this.pipeline.submit({
          workspaceId: ev.workspace_id,
          limit,
          events: [ev],
          done: (r: SubmitResult) => {
            const out = r.results[0]!;
            const usage: PlanUsage = { used: r.used, limit };
            if (out.kind === 'rejected') {
              this.note(ev.workspace_id, out.code, out.message, undefined, doc, now);
              sendError(res, ctx, out.code, out.message, undefined, usage);
            } else sendJson(res, ctx, 202, rowJson(out.row, out.kind === 'duplicate'), usage);
          },
        });
      },
      (err: unknown) => this.fail(res, ctx, err),
    );
  }

  private batch(res: HttpResponse, ctx: Ctx, p: Principal, doc: unknown): void {
    if (
      typeof doc !== 'object' ||
      doc === null ||
      Array.isArray(doc) ||
      !Array.isArray((doc as { events?: unknown }).events)
    ) {
      return this.reject(res, ctx, 'invalid_body', 'the body must be {"events": [ … ]}', 'events');
    }
    for (const k in doc)
      if (k !== 'events')
        return this.reject(res, ctx, 'unknown_field', `unknown field "${k.slice(0, 64)}"`, k.slice(0, 64));
    const items = (doc as { events: unknown[] }).events;
    if (items.length === 0)
      return this.reject(res, ctx, 'invalid_body', 'events must hold at least one event', 'events');
    if (items.length > MAX_BATCH_EVENTS)
      return this.reject(res, ctx, 'batch_too_large', `a batch holds at most ${MAX_BATCH_EVENTS} events`, 'events');

    const now = Date.now();
    const results: (EventResult | Rejection)[] = new Array(items.length);
    const valid: MeterEvent[] = [];
    const where: number[] = [];
    // The operator key may meter for any workspace, one workspace per batch: the first valid event's.
    let ws = p.workspaceId;
    for (let i = 0; i < items.length; i++) {
      const ev = validateMeterEvent(items[i], now);
      if (ev instanceof Rejection) results[i] = ev;
      else if (ws !== null && ev.workspace_id !== ws)
        results[i] = new Rejection(
          'workspace_mismatch',
          "workspace_id must be the API key's workspace",
          'workspace_id',
        );
      else {
        ws = ev.workspace_id;
        valid.push(ev);
        where.push(i);
      }
    }
    if (ws === null) return this.answerBatch(res, ctx, results, undefined, null, items, now);
    const workspaceId = ws;
    this.limitFor(p, workspaceId).then(
      (limit) => {
        if (limit === undefined)
          return this.reject(res, ctx, 'workspace_not_found', `no workspace ${workspaceId}`, 'workspace_id');
        if (valid.length === 0)
          return this.withUsage(workspaceId, p, now, (usage) =>
            this.answerBatch(res, ctx, results, usage, workspaceId, items, now),
          );
        this.pipeline.submit({
          workspaceId,
          limit,
          events: valid,
          done: (r) => {
            for (let k = 0; k < where.length; k++) results[where[k]!] = r.results[k]!;
            this.answerBatch(res, ctx, results, { used: r.used, limit }, workspaceId, items, now);
          },
        });
      },
      (err: unknown) => this.fail(res, ctx, err),
    );
  }

  private answerBatch(
    res: HttpResponse,
    ctx: Ctx,
    results: (EventResult | Rejection)[],
    usage: PlanUsage | undefined,
    ws: string | null,
    items: unknown[],
    now: number,
  ): void {
    let accepted = 0;
    let duplicates = 0;
    let rejected = 0;
    let list = '';
    for (let i = 0; i < results.length; i++) {
      const r = results[i]!;
      if (i > 0) list += ',';
      if (r instanceof Rejection || r.kind === 'rejected') {
        rejected++;
        if (r instanceof Rejection) this.metrics.rejected[r.code]!.inc();
        if (ws !== null) this.note(ws, r.code, r.message, r instanceof Rejection ? r.field : undefined, items[i], now);
        const field = r instanceof Rejection && r.field !== undefined ? `,"field":${JSON.stringify(r.field)}` : '';
        list += `{"index":${i},"status":${statusOf(r.code)},"error":{"code":"${r.code}","message":${JSON.stringify(r.message)}${field}}}`;
      } else {
        if (r.kind === 'stored') accepted++;
        else duplicates++;
        list += `{"index":${i},"status":202,"id":"${r.row.id}","duplicate":${r.kind === 'duplicate'}}`;
      }
    }
    sendJson(
      res,
      ctx,
      202,
      `{"accepted":${accepted},"duplicates":${duplicates},"rejected":${rejected},"results":[${list}]}`,
      usage,
    );
  }

  /** The plan's event limit for a workspace: null = unlimited, undefined = no such workspace. */
  private limitFor(p: Principal, workspaceId: string): Promise<number | null | undefined> {
    if (p.plan !== null) return Promise.resolve(PLAN_QUOTAS[p.plan].eventsPerPeriod);
    return this.auth
      .planOf(workspaceId)
      .then((plan) => (plan === undefined ? undefined : PLAN_QUOTAS[plan].eventsPerPeriod));
  }

  /** Rejections of an authenticated workspace still carry the plan headers (read, never moved). */
  private withUsage(workspaceId: string, p: Principal, now: number, then: (u: PlanUsage | undefined) => void): void {
    const limit = p.plan === null ? undefined : PLAN_QUOTAS[p.plan].eventsPerPeriod;
    if (limit === undefined) return then(undefined);
    this.deduper.used(workspaceId, periodOf(now)).then(
      (used) => then({ used, limit }),
      () => then(undefined),
    );
  }

  private reject(
    res: HttpResponse,
    ctx: Ctx,
    code: ErrorCode,
    message: string,
    field?: string,
    usage?: PlanUsage,
  ): void {
    this.metrics.rejected[code]?.inc();
    sendError(res, ctx, code, message, field, usage);
  }

  /** Notes a refused event of a known workspace for the event explorer; the rejection path only, never an accepted event. */
  private note(ws: string, code: string, message: string, field: string | undefined, item: unknown, at: number): void {
    const log = this.opts.rejections;
    if (log === undefined) return;
    const o = typeof item === 'object' && item !== null ? (item as Record<string, unknown>) : {};
    log.record(ws, {
      at,
      code,
      message,
      ...(field === undefined ? {} : { field }),
      ...(typeof o.event_type === 'string' ? { event_type: o.event_type.slice(0, 100) } : {}),
      ...(typeof o.idempotency_key === 'string' ? { idempotency_key: o.idempotency_key.slice(0, 255) } : {}),
    });
  }

  private fail(res: HttpResponse, ctx: Ctx, err: unknown): void {
    this.log.error({ err }, 'meter request failed');
    this.reject(res, ctx, 'service_unavailable', 'a dependency is unavailable; nothing was stored, retry with backoff');
  }
}

function isJson(ctype: string): boolean {
  return (
    ctype.length >= 16 &&
    ctype.slice(0, 16).toLowerCase() === 'application/json' &&
    (ctype.length === 16 || ctype[16] === ';' || ctype[16] === ' ')
  );
}
