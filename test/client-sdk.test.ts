import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { MeterdClient, QuotaExhaustedError, type MeterResult, type Quota, type RetryInfo } from '@meterd/client';
import { lit } from '@meterd/core/clickhouse';
import { GateProxy, openTestStores, type TestStores } from '@meterd/core/testing';
import { ROOT, freePort, startService, waitFor, type Service } from './support/services.js';

/**
 * @meterd/client against the real ingest, each its own process: an ingest killed (-9) and
 * restarted in the middle of the client's batches loses nothing and stores nothing twice, and a
 * full spool's 503s are retried with backoff (honouring Retry-After) until they are stored.
 */
let stores: TestStores;
const dirs: string[] = [];
const running: Service[] = [];

before(async () => {
  stores = await openTestStores('clientsdk');
});
after(async () => {
  for (const s of running) if (s.proc.exitCode === null && s.proc.signalCode === null) s.proc.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  await stores.close();
});

async function startIngest(port: number, spoolDir: string, extra: Record<string, string> = {}): Promise<Service> {
  const s = await startService('ingest', 'ingest', port, {
    ...stores.env,
    INGEST_PORT: String(port),
    INGEST_THREADS: '1',
    SPOOL_DIR: spoolDir,
    SHIP_INTERVAL_MS: '50',
    LOG_LEVEL: 'warn',
    ...extra,
  });
  running.push(s);
  return s;
}

function spool(): string {
  const d = mkdtempSync(join(tmpdir(), 'meterd-sdk-'));
  dirs.push(d);
  return d;
}

/** Distinct keys stored for the workspace, and keys stored as more than one event (a double count). */
async function stored(workspaceId: string): Promise<{ distinct: number; doubled: number }> {
  const rs = await stores.clickhouse.query({
    query: `SELECT count() AS distinct, countIf(ids > 1) AS doubled FROM (
        SELECT idempotency_key, uniqExact(event_id) AS ids FROM events WHERE workspace_id = ${lit(workspaceId)}
        GROUP BY event_type, idempotency_key)`,
    format: 'JSONEachRow',
  });
  const [r] = await rs.json<{ distinct: string; doubled: string }>();
  return { distinct: Number(r!.distinct), doubled: Number(r!.doubled) };
}

function tally(results: MeterResult[]): Record<string, number> {
  const t: Record<string, number> = {};
  for (const r of results) t[r.status] = (t[r.status] ?? 0) + 1;
  return t;
}

test('ingest killed -9 and restarted mid-batch: 0 events lost, 0 doubled', async () => {
  const { workspace, token } = await stores.workspace('enterprise');
  const port = await freePort();
  const dir = spool();
  let ingest = await startIngest(port, dir);
  const retries: RetryInfo[] = [];
  const client = new MeterdClient({
    baseUrl: ingest.url,
    apiKey: token,
    workspaceId: workspace.id,
    concurrency: 4,
    retryBaseMs: 20,
    retryMaxMs: 300,
    maxAttempts: 200,
    onRetry: (r) => retries.push(r),
  });
  const N = 6_000;
  let acked = 0;
  let restarted: Promise<void> | undefined;
  const all: Promise<MeterResult>[] = [];
  for (let chunk = 0; chunk < N / 100; chunk++) {
    const these = Array.from({ length: 100 }, (_, i) =>
      client.meter({ event_type: 'api.call', idempotency_key: `k${chunk * 100 + i}` }).then((r) => {
        acked++;
        return r;
      }),
    );
    all.push(...these);
    // Two chunks in flight at most: the kill lands while batches are on the wire, not after the last.
    if (chunk >= 1) await Promise.all(all.slice((chunk - 1) * 100, chunk * 100));
    if (restarted === undefined && acked >= N / 3) {
      ingest.proc.kill('SIGKILL');
      restarted = new Promise<void>((resolve) => ingest.proc.once('exit', () => resolve())).then(async () => {
        ingest = await startIngest(port, dir);
      });
    }
  }
  const results = await Promise.all(all);
  await restarted;
  await client.close();
  const t = tally(results);
  assert.equal((t.accepted ?? 0) + (t.duplicate ?? 0), N, JSON.stringify(t));
  assert.ok(
    retries.some((r) => r.reason === 'network_error'),
    'the client saw the restart and retried through it',
  );
  await waitFor('every event in ClickHouse', async () => (await stored(workspace.id)).distinct >= N, 60_000);
  assert.deepEqual(await stored(workspace.id), { distinct: N, doubled: 0 });
  await ingest.stop();
});

test('a full spool’s 503s are retried with jittered, growing backoff that honours Retry-After, then stored', async () => {
  const { workspace, token } = await stores.workspace('enterprise');
  const ch = new URL(stores.env.CLICKHOUSE_URL!);
  const gate = await GateProxy.start({ host: ch.hostname, port: Number(ch.port) });
  const port = await freePort();
  const ingest = await startIngest(port, spool(), {
    CLICKHOUSE_URL: `http://127.0.0.1:${gate.port}`,
    SPOOL_MAX_BYTES: String(1 << 20),
  });
  // ClickHouse unreachable: nothing ships, the spool fills to its 1 MiB limit, ingest answers 503.
  gate.hold();
  const retries: RetryInfo[] = [];
  const client = new MeterdClient({
    baseUrl: ingest.url,
    apiKey: token,
    workspaceId: workspace.id,
    retryBaseMs: 50,
    retryMaxMs: 2_000,
    maxAttempts: 100,
    onRetry: (r) => retries.push(r),
  });
  const N = 8_000;
  const all = Array.from({ length: N }, (_, i) => client.meter({ event_type: 'api.call', idempotency_key: `s${i}` }));
  await waitFor('batched events refused with 503', async () => retries.some((r) => r.reason === 'service_unavailable'));
  // A single call's 503 carries Retry-After: 1, which the client waits out.
  const single = client.meterNow({ event_type: 'api.call', idempotency_key: 'single' });
  await waitFor('a single call refused with 503', async () => retries.some((r) => r.path === '/api/v1/meter'));
  gate.release();
  const results = await Promise.all([...all, single]);
  await client.close();
  assert.equal(tally(results).accepted, N + 1);
  const batchRetries = retries.filter((r) => r.path === '/api/v1/meter/batch');
  assert.ok(batchRetries.length > 0);
  for (const r of batchRetries) {
    assert.equal(r.reason, 'service_unavailable');
    assert.ok(r.delayMs <= Math.min(2_000, 50 * 2 ** (r.attempt - 1)), `backoff ceiling at attempt ${r.attempt}`);
  }
  const singleRetry = retries.find((r) => r.path === '/api/v1/meter')!;
  assert.equal(singleRetry.reason, '503 service_unavailable');
  assert.ok(singleRetry.delayMs >= 1_000, 'Retry-After: 1 honoured');
  await waitFor('every event in ClickHouse', async () => (await stored(workspace.id)).distinct >= N + 1, 60_000);
  assert.deepEqual(await stored(workspace.id), { distinct: N + 1, doubled: 0 });
  await ingest.stop();
  await gate.close();
});

test('quota awareness: the headers of every answer reach onQuota; once used up, meter() fails fast instead of queueing', async () => {
  const { workspace, token } = await stores.workspace('free');
  const port = await freePort();
  const ingest = await startIngest(port, spool());
  const seen: Quota[] = [];
  const client = new MeterdClient({
    baseUrl: ingest.url,
    apiKey: token,
    workspaceId: workspace.id,
    quotaBackpressure: true,
    onQuota: (q) => seen.push(q),
  });
  const results = await Promise.all(
    Array.from({ length: 520 }, (_, i) => client.meter({ event_type: 'api.call', idempotency_key: `q${i}` })),
  );
  const t = tally(results);
  assert.equal(t.accepted, 500, JSON.stringify(t));
  assert.equal(t.rejected, 20);
  assert.ok(results.some((r) => r.status === 'rejected' && r.code === 'plan_quota_exceeded'));
  assert.deepEqual(seen.at(-1), { used: 500, limit: 500, remaining: 0 });
  assert.deepEqual(client.quota, { used: 500, limit: 500, remaining: 0 });
  await assert.rejects(client.meter({ event_type: 'api.call' }), QuotaExhaustedError);
  await client.close();
  await ingest.stop();
});

test('graceful shutdown: the README example, sent SIGTERM while events are queued, flushes them all first', async () => {
  const { workspace, token } = await stores.workspace('enterprise');
  const port = await freePort();
  const ingest = await startIngest(port, spool());
  // The example's requests are held at a gate until it has been signalled, so the signal always
  // lands while its events are queued or in flight (a fast machine once sent all 3000 first).
  const gate = await GateProxy.start({ host: '127.0.0.1', port });
  gate.hold();
  const child = spawn(process.execPath, [`${ROOT}client/dist/examples/meter.js`, '3000'], {
    env: {
      ...process.env,
      METERD_URL: `http://127.0.0.1:${gate.port}`,
      METERD_API_KEY: token,
      METERD_WORKSPACE: workspace.id,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Listened for from the start: an 'exit' emitted before a later once() would never be seen.
  const exit = new Promise<[number | null, string | null]>((r) => child.once('exit', (c, s) => r([c, s])));
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  try {
    await waitFor('the example to send its first request', async () => gate.heldBytes > 0 || child.exitCode !== null);
    assert.equal(child.exitCode, null, `the example exited before it sent anything: ${err}`);
    child.kill('SIGTERM');
    gate.release();
    const [code, signal] = await exit;
    assert.ok(code === 0 || signal === 'SIGTERM', `exit ${code} ${signal}: ${err}`);
  } finally {
    gate.release();
    await gate.close();
  }
  await waitFor('all 3000 events in ClickHouse', async () => (await stored(workspace.id)).distinct >= 3000, 60_000);
  assert.deepEqual(await stored(workspace.id), { distinct: 3000, doubled: 0 });
  await ingest.stop();
});
