import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '@meterd/core/log';
import { MetricsRegistry } from '@meterd/core/metrics';
import type { TestStores } from '@meterd/core/testing';
import { dedupeRegistryKey } from '@meterd/core/contracts';
import { loadIngestConfig } from '../src/config.js';
import { startIngestThread, type IngestThread, type ThreadOptions } from '../src/app.js';

export const QUIET = createLogger('ingest-test', process.env.TEST_LOG_LEVEL ?? 'silent');

export function tempDir(label: string): string {
  return mkdtempSync(join(tmpdir(), `meterd-${label}-`));
}

/** One in-process ingest thread on a random port, wired to the test's own stores. */
export async function startTestIngest(
  stores: TestStores,
  env: Record<string, string> = {},
  opts: Partial<ThreadOptions> = {},
): Promise<IngestThread & { url: string; spoolDir: string }> {
  const spoolDir = env.SPOOL_DIR ?? tempDir('spool');
  const cfg = loadIngestConfig({
    ...stores.env,
    INGEST_PORT: '0',
    SPOOL_DIR: spoolDir,
    SHIP_INTERVAL_MS: '50',
    LOG_LEVEL: 'silent',
    ...env,
  });
  // A deployment's workspace registry is normally old: a young one (the first seconds of a Redis,
  // docs/redis.md) makes a new workspace wait until every thread, also the earlier tests' stopped
  // ones with rows unshipped, has shipped past its birth. Tests on the shared Redis get an old one.
  if (env.REDIS_URL === undefined)
    await stores.redis.hsetnx(dedupeRegistryKey(stores.redisPrefix), '~gen', `${randomBytes(8).toString('hex')}:0`);
  const t = await startIngestThread(cfg, {
    index: 0,
    registry: new MetricsRegistry(1, 0),
    redisPrefix: stores.redisPrefix,
    log: QUIET,
    ...opts,
  });
  return Object.assign(t, { url: `http://127.0.0.1:${t.port}`, spoolDir });
}

export interface Reply {
  status: number;
  headers: Headers;
  body: any;
}

export async function post(
  url: string,
  path: string,
  body: unknown,
  token?: string,
  headers: Record<string, string> = {},
): Promise<Reply> {
  const res = await fetch(url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* not JSON: the test asserts on it */
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

export function event(workspaceId: string, key: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    workspace_id: workspaceId,
    event_type: 'checkout.completed',
    quantity: 1,
    gmv_cents: 4299,
    idempotency_key: key,
    occurred_at: new Date().toISOString(),
    ...extra,
  };
}

/**
 * POSTs one batch; the idempotency keys answered 202 (stored or duplicate), or null when the
 * connection failed (refused or reset while ingest is down: nothing acknowledged).
 */
export async function batchAcked(
  url: string,
  token: string,
  events: Record<string, unknown>[],
): Promise<string[] | null> {
  try {
    const res = await fetch(url + '/api/v1/meter/batch', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ events }),
    });
    const body = (await res.json()) as { results?: { index: number; status: number }[] };
    if (res.status !== 202) return [];
    return body.results!.filter((r) => r.status === 202).map((r) => events[r.index]!.idempotency_key as string);
  } catch {
    return null;
  }
}

/** Rows for a workspace in ClickHouse: `total` counts every stored copy, `distinct` the idempotency triples. */
export async function storedCounts(
  stores: TestStores,
  workspaceId: string,
): Promise<{ total: number; distinct: number }> {
  const rs = await stores.clickhouse.query({
    query: `SELECT count() AS total, uniqExact(event_type, idempotency_key) AS distinct FROM events WHERE workspace_id = '${workspaceId}'`,
    format: 'JSONEachRow',
  });
  const [row] = await rs.json<{ total: string; distinct: string }>();
  return { total: Number(row!.total), distinct: Number(row!.distinct) };
}

/** Waits until the spool has shipped everything (or throws after `ms`). */
export async function waitShipped(t: IngestThread, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (t.shipper.unshippedBytes > 0) {
    if (Date.now() > deadline) throw new Error(`spool still holds ${t.shipper.unshippedBytes} bytes after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function until<T>(
  fn: () => Promise<T>,
  ok: (v: T) => boolean,
  ms = 15_000,
  label = 'condition',
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${label}; last value ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until Redis dropped the key's hot row, so the next claim must answer from the compact tier. */
export function hotGone(stores: TestStores, workspaceId: string, key: string): Promise<number> {
  return until(
    () => stores.redis.exists(`${stores.redisPrefix}:{${workspaceId}}:d:checkout.completed:${key}`),
    (n) => n === 0,
    10_000,
    `the hot row of ${key} to expire`,
  );
}
