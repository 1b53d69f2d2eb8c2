import cluster from 'node:cluster';
import { createClient } from '@clickhouse/client';
import Fastify, { type FastifyReply } from 'fastify';
import { Redis } from 'ioredis';
import { Authenticator, hasScope, type Principal } from '@meterd/core/auth';
import { pinnedSettings, toClickHouseDateTime } from '@meterd/core/clickhouse';
import { dedupeKey, quotaKey } from '@meterd/core/contracts';
import { ApiError, errorBody } from '@meterd/core/errors';
import { Rejection, formatRfc3339, validateMeterEvent, type MeterEvent } from '@meterd/core/event';
import { newEventId } from '@meterd/core/ids';
import { periodOf } from '@meterd/core/plans';
import { createPool } from '@meterd/core/store';

/**
 * The conventional baseline: the same endpoints and semantics as ingest, written the way most teams
 * would. Fastify (node:http) with its JSON body parser; the same key lookup and validation as meterd
 * (so the comparison is about the request path, not auth or rules); one Redis SET NX per event plus
 * an INCR for the quota counter, with stock ioredis; and "ack after the ClickHouse insert", with
 * inserts through @clickhouse/client in small batches (up to 1,000 rows or 20 ms). As many processes
 * (node:cluster) as ingest has threads. It counts usage but enforces no quota: the benchmark's
 * workspaces are unlimited, so the check would never refuse anything. Env: PORT, THREADS, DATABASE_URL, REDIS_URL, CLICKHOUSE_URL,
 * CLICKHOUSE_DATABASE, BASELINE_TABLE.
 */
const env = process.env;
const threads = Number(env.THREADS ?? '1');

if (cluster.isPrimary && threads > 1) {
  for (let i = 0; i < threads; i++) cluster.fork();
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.kill('SIGTERM');
    setTimeout(() => process.exit(0), 2_000).unref();
  });
  cluster.on('exit', () => {
    if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
  });
} else {
  await serve();
}

async function serve(): Promise<void> {
  const redis = new Redis(env.REDIS_URL!);
  const sub = new Redis(env.REDIS_URL!);
  const pool = createPool(new URL(env.DATABASE_URL!), 4);
  const auth = new Authenticator(pool, sub, 30_000, '');
  const ch = createClient({
    url: env.CLICKHOUSE_URL!,
    database: env.CLICKHOUSE_DATABASE!,
    clickhouse_settings: pinnedSettings('server-18'),
  });
  const table = env.BASELINE_TABLE ?? 'baseline_events';
  const WINDOW = 600;

  // Small batches: rows wait up to 20 ms or until 1,000 are queued; every request awaits its insert.
  type Batch = { rows: Record<string, unknown>[]; waiters: ((err?: Error) => void)[]; timer: NodeJS.Timeout };
  let pending: Batch | undefined;
  const flush = (batch: Batch): void => {
    clearTimeout(batch.timer);
    if (pending === batch) pending = undefined;
    ch.insert({ table, values: batch.rows, format: 'JSONEachRow' }).then(
      () => batch.waiters.forEach((w) => w()),
      (err: Error) => batch.waiters.forEach((w) => w(err)),
    );
  };
  const store = (rows: Record<string, unknown>[]): Promise<void> =>
    new Promise((resolve, reject) => {
      let b = pending;
      if (b === undefined) {
        const created: Batch = { rows: [], waiters: [], timer: setTimeout(() => flush(created), 20) };
        b = pending = created;
      }
      b.rows.push(...rows);
      b.waiters.push((err) => (err ? reject(err) : resolve()));
      if (b.rows.length >= 1_000) flush(b);
    });

  const app = Fastify({ logger: false, bodyLimit: 1 << 20 });
  app.get('/healthz', async () => ({ status: 'ok' }));

  const principal = async (header: string | undefined): Promise<Principal | ApiError> =>
    auth.authenticate(header ?? '');
  const fail = (reply: FastifyReply, e: ApiError) =>
    reply
      .code(e.status)
      .type('application/json')
      .send(errorBody(e.code, e.message, e.field));

  type Outcome = { status: number; body: Record<string, unknown> };
  const accept = async (ev: MeterEvent): Promise<Outcome> => {
    const now = Date.now();
    const id = newEventId();
    const dkey = dedupeKey('bl', ev.workspace_id, `${ev.event_type}:${ev.idempotency_key}`);
    const row = {
      id,
      workspace_id: ev.workspace_id,
      event_type: ev.event_type,
      quantity: ev.quantity,
      gmv_cents: ev.gmv_cents,
      currency: ev.currency,
      idempotency_key: ev.idempotency_key,
      occurred_at: formatRfc3339(ev.occurred_at_ms),
      received_at: formatRfc3339(now),
    };
    const claimed = await redis.set(dkey, JSON.stringify(row), 'EX', WINDOW, 'NX');
    if (claimed === null) {
      const prior = await redis.get(dkey);
      return { status: 202, body: { ...(prior ? JSON.parse(prior) : row), duplicate: true } };
    }
    try {
      await store([
        {
          workspace_id: ev.workspace_id,
          event_type: ev.event_type,
          idempotency_key: ev.idempotency_key,
          event_id: id,
          quantity: ev.quantity,
          gmv_cents: ev.gmv_cents,
          currency: ev.currency,
          occurred_at: toClickHouseDateTime(ev.occurred_at_ms),
          received_at: toClickHouseDateTime(now),
        },
      ]);
    } catch {
      await redis.del(dkey);
      return { status: 503, body: { error: { code: 'service_unavailable', message: 'not stored; retry' } } };
    }
    await redis.incr(quotaKey('bl', ev.workspace_id, periodOf(now)));
    return { status: 202, body: { ...row, duplicate: false } };
  };

  const check = (p: Principal | ApiError, ev: MeterEvent | Rejection): ApiError | Rejection | MeterEvent => {
    if (p instanceof ApiError) return p;
    if (!hasScope(p, 'meter:write')) return new ApiError('insufficient_scope', 'this key lacks the meter:write scope');
    if (ev instanceof Rejection) return ev;
    if (p.workspaceId !== null && ev.workspace_id !== p.workspaceId)
      return new Rejection('workspace_mismatch', "workspace_id must be the API key's workspace", 'workspace_id');
    return ev;
  };

  app.post('/api/v1/meter', async (req, reply) => {
    const p = await principal(req.headers.authorization);
    const ev = check(p, validateMeterEvent(req.body, Date.now()));
    if (ev instanceof ApiError) return fail(reply, ev);
    if (ev instanceof Rejection)
      return reply
        .code(400)
        .type('application/json')
        .send(errorBody(ev.code, ev.message, ev.field));
    const out = await accept(ev);
    return reply.code(out.status).header('x-plan-events-limit', 'unlimited').send(out.body);
  });

  app.post('/api/v1/meter/batch', async (req, reply) => {
    const p = await principal(req.headers.authorization);
    if (p instanceof ApiError) return fail(reply, p);
    const items = (req.body as { events?: unknown[] } | null)?.events;
    if (!Array.isArray(items) || items.length === 0 || items.length > 100) {
      return reply
        .code(400)
        .type('application/json')
        .send(errorBody('invalid_body', 'the body must be {"events": [1–100 events]}', 'events'));
    }
    const now = Date.now();
    const results = await Promise.all(
      items.map(async (item, index) => {
        const ev = check(p, validateMeterEvent(item, now));
        if (ev instanceof ApiError || ev instanceof Rejection)
          return { index, status: 400, error: { code: ev.code, message: ev.message } };
        const out = await accept(ev);
        return { index, status: out.status, id: out.body.id, duplicate: out.body.duplicate };
      }),
    );
    const accepted = results.filter((r) => r.status === 202 && r.duplicate === false).length;
    const duplicates = results.filter((r) => r.duplicate === true).length;
    return reply.code(202).send({ accepted, duplicates, rejected: results.length - accepted - duplicates, results });
  });

  await app.listen({ host: '127.0.0.1', port: Number(env.PORT) });
  process.on('SIGTERM', () => {
    void app.close().finally(() => process.exit(0));
  });
}
