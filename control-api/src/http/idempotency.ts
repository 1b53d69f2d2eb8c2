import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions, preHandlerHookHandler } from 'fastify';
import { ApiError } from '@meterd/core/errors';
import type { Ctx } from '../context.js';
import { LEASE_SECONDS } from '../services/idempotency.js';

declare module 'fastify' {
  interface FastifySchema {
    /** A create: takes an Idempotency-Key header (installIdempotency adds the step, the OpenAPI document the header). */
    idempotent?: boolean;
  }
  interface FastifyRequest {
    /** Set while this request owns its Idempotency-Key: its answer is stored on send. */
    idempotency: { scope: string; key: string; fingerprint: Buffer; heartbeat: NodeJS.Timeout } | null;
  }
}

export const IDEMPOTENCY_HEADER = 'idempotency-key';
/** Printable ASCII, 1–255 characters, like Stripe's keys. */
const KEY_PATTERN = /^[\x21-\x7e][\x20-\x7e]{0,254}$/;

/**
 * Idempotent creates for every route whose schema says `idempotent: true`: the step runs after the
 * route's own preHandlers (authentication), so the key is scoped to the authenticated caller, and
 * after body validation, so a refused body never takes a key. Only a 2xx answer is stored; any other
 * answer frees the key for a retry.
 */
export function installIdempotency(app: FastifyInstance, ctx: Ctx): void {
  const store = ctx.services.idempotency;
  app.decorateRequest('idempotency', null);
  app.addHook('onRoute', (r: RouteOptions) => {
    if ((r.schema as { idempotent?: boolean } | undefined)?.idempotent !== true) return;
    const own = r.preHandler === undefined ? [] : Array.isArray(r.preHandler) ? r.preHandler : [r.preHandler];
    r.preHandler = [...own, step as preHandlerHookHandler];
  });
  app.addHook('onSend', async (req, reply, payload) => {
    const held = req.idempotency;
    if (held === null) return payload;
    req.idempotency = null;
    clearInterval(held.heartbeat);
    if (reply.statusCode >= 200 && reply.statusCode < 300 && typeof payload === 'string')
      await store.finish(held.scope, held.key, held.fingerprint, reply.statusCode, payload);
    else await store.abandon(held.scope, held.key);
    return payload;
  });

  async function step(req: FastifyRequest, reply: FastifyReply): Promise<void> {
    const raw = req.headers[IDEMPOTENCY_HEADER];
    if (raw === undefined) return;
    if (typeof raw !== 'string' || !KEY_PATTERN.test(raw))
      throw new ApiError(
        'invalid_field',
        'Idempotency-Key must be 1–255 printable ASCII characters',
        'Idempotency-Key',
      );
    const scope = scopeOf(req);
    const print = fingerprint(req);
    const begun = await store.begin(scope, raw, print);
    if (begun.kind === 'owner') {
      // Renewed while the handler runs: a lapsed lease then means the process died (services/idempotency.ts).
      const heartbeat = setInterval(
        () => {
          store
            .extend(scope, raw)
            .catch((err: unknown) => req.log.warn({ err }, 'renewing an Idempotency-Key lease failed'));
        },
        (LEASE_SECONDS * 1000) / 3,
      ).unref();
      req.idempotency = { scope, key: raw, fingerprint: print, heartbeat };
      return;
    }
    await reply.status(begun.status).header('idempotent-replayed', 'true').type('application/json').send(begun.body);
  }
}

/** Whose key space the key lives in: the workspace of the key, the operator, or (public signup) the client address. */
function scopeOf(req: FastifyRequest): string {
  const p = req.principal;
  if (p === null) return `ip:${req.ip}`;
  return p.workspaceId === null ? 'operator' : `ws:${p.workspaceId}`;
}

/** The request a key stands for: method, path (with its parameters and query) and parsed body. */
function fingerprint(req: FastifyRequest): Buffer {
  return createHash('sha256')
    .update(`${req.method}\0${req.url}\0${JSON.stringify(req.body ?? null)}`)
    .digest();
}
