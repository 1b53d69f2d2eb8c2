import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { event, post, startTestIngest, tempDir, until, waitShipped } from './helpers.js';
import { freePort, INGEST_MAIN, killHard, spawnIngest, stopClean } from './processes.js';
import { ClickHouseStoredRows } from '../src/dedupe/clickhouse.js';
import { accountLostVolume, lostLookupSettings, type LostReport } from '../src/spool/identity-lost.js';
import { createClickHouse } from '@meterd/core/clickhouse';
import { quotaKey } from '@meterd/core/contracts';
import { periodOf } from '@meterd/core/plans';
import { loadIngestConfig } from '../src/config.js';

/**
 * A replaced spool volume (issue 17, "Volumes"): ingest refuses to start on it, `spool:lost`
 * accounts for exactly the acknowledged rows that never reached ClickHouse and releases their
 * keys, and the clients' retries of those keys are then stored, once.
 */
let stores: TestStores;
before(async () => {
  stores = await openTestStores('lost_volume');
});
after(async () => {
  await stores.close();
});

const CLI = fileURLToPath(new URL('../src/spool/identity-cli.js', import.meta.url));
// Short pending claims: the command's window is widened by this on both sides.
const TTL = { DEDUPE_PENDING_TTL_MS: '2000' };

/** Runs a process to its end (at most `ms`), with its exit code and everything it printed. */
function runToEnd(args: string[], env: Record<string, string>, ms = 60_000) {
  return new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(process.execPath, args, {
      env: { ...process.env, LOG_LEVEL: 'warn', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${args.join(' ')} still running after ${ms} ms: ${stdout}${stderr}`));
    }, ms);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * Sends the keys' events as one batch until every event is answered 202, as a client retries: a
 * fresh process's first claim of a new workspace can outlast its claim budget on a loaded machine
 * (503), and an event never acknowledged is in no spool.
 */
async function acknowledged(url: string, token: string, workspaceId: string, keys: string[]): Promise<void> {
  await until(
    () => post(url, '/api/v1/meter/batch', { events: keys.map((k) => event(workspaceId, k)) }, token),
    (r) => r.status === 202 && r.body.results.every((x: { status: number }) => x.status === 202),
    30_000,
    `every event of the batch to ${url} acknowledged`,
  );
}

async function storedTimes(workspaceId: string): Promise<Map<string, number>> {
  const rs = await stores.clickhouse.query({
    query: `SELECT idempotency_key, count() AS n FROM events WHERE workspace_id = '${workspaceId}' GROUP BY idempotency_key`,
    format: 'JSONEachRow',
  });
  return new Map(
    (await rs.json<{ idempotency_key: string; n: string }>()).map((r) => [r.idempotency_key, Number(r.n)]),
  );
}

test(
  'volume replaced: start refused; spool:lost lists exactly the unshipped rows, their retries are stored once, and the start is allowed',
  { timeout: 120_000 },
  async () => {
    const { workspace, token } = await stores.workspace('enterprise');
    const instance = `lost-${process.pid}`;
    const env = {
      ...stores.env,
      ...TTL,
      INGEST_PORT: String(await freePort()),
      INGEST_THREADS: '2',
      INGEST_INSTANCE: instance,
      SPOOL_DIR: tempDir('lost-a'),
      // Nothing ships while the test runs: every acknowledged row is on this volume only.
      SHIP_INTERVAL_MS: '60000',
    };
    const other = await startTestIngest(stores, { ...TTL, SHIP_INTERVAL_MS: '50' });
    let a = await spawnIngest(env);
    try {
      const lostKeys = Array.from({ length: 40 }, (_, i) => `a-${i}`);
      const shippedKeys = Array.from({ length: 40 }, (_, i) => `b-${i}`);
      const batch = (url: string, keys: string[]) =>
        post(url, '/api/v1/meter/batch', { events: keys.map((k) => event(workspace.id, k)) }, token);
      // In the same seconds, another instance stores (and ships) keys of its own: they are in the
      // lost instance's window but in ClickHouse, so they must not be counted.
      await Promise.all([
        acknowledged(a.url, token, workspace.id, lostKeys),
        acknowledged(other.url, token, workspace.id, shippedKeys),
      ]);
      await waitShipped(other);
      await killHard(a.child);

      // The volume is replaced by an empty one: ingest refuses, naming the command.
      const replaced = { ...env, SPOOL_DIR: tempDir('lost-b') };
      const refused = await runToEnd([INGEST_MAIN], replaced);
      assert.equal(refused.code, 1);
      assert.match(refused.stdout + refused.stderr, /METERD_INGEST_SPOOL_VOLUME_LOST/);
      assert.match(refused.stdout + refused.stderr, new RegExp(`npm run spool:lost -- --instance ${instance}`));

      // The loss is silent for the clients meanwhile: a retry is answered as a duplicate.
      const before = await batch(other.url, lostKeys.slice(0, 1));
      assert.equal(before.body.results[0].duplicate, true);

      const cli = await runToEnd([CLI, '--instance', instance, '--wait-ms', '40000'], { ...stores.env, ...TTL });
      assert.equal(cli.code, 0, cli.stderr);
      const report = JSON.parse(cli.stdout) as LostReport;
      assert.equal(report.instance, instance);
      assert.equal(report.lost, 40);
      assert.equal(report.complete, true);
      assert.deepEqual(Object.keys(report.workspaces), [workspace.id]);
      assert.deepEqual(
        report.workspaces[workspace.id]!.keys.map((k) => k.idempotency_key).sort(),
        [...lostKeys].sort(),
      );
      assert.match(cli.stderr, /40 idempotency keys released now/);

      // Again: the same report, nothing released twice.
      const again = await runToEnd([CLI, '--instance', instance], { ...stores.env, ...TTL });
      assert.equal(again.code, 0, again.stderr);
      assert.deepEqual(JSON.parse(again.stdout), report);
      assert.match(again.stderr, / 0 idempotency keys released now/);

      // The retries are stored now, each once; the other instance's keys stay once.
      const retried = await batch(other.url, lostKeys);
      assert.equal(retried.status, 202);
      assert.ok(
        retried.body.results.every((r: { status: number; duplicate: boolean }) => r.status === 202 && !r.duplicate),
        JSON.stringify(retried.body.results.slice(0, 3)),
      );
      const twice = await batch(other.url, lostKeys);
      assert.ok(twice.body.results.every((r: { duplicate: boolean }) => r.duplicate));
      await waitShipped(other);
      const stored = await until(
        () => storedTimes(workspace.id),
        (m) => m.size === 80,
        10_000,
        'every key in ClickHouse',
      );
      for (const k of [...lostKeys, ...shippedKeys]) assert.equal(stored.get(k), 1, k);
      // The lost rows' count was given back with their keys, and their retries counted once.
      assert.equal(
        Number(await stores.redis.get(quotaKey(stores.redisPrefix, workspace.id, periodOf(Date.now())))),
        80,
      );

      // The refusal is cleared: ingest starts on the new volume. It stops cleanly: killed, it would be
      // an instance down with its spool open, which the next test's spool:lost refuses over once
      // its heartbeat is stale (how soon depends on the machine's load).
      a = await spawnIngest(replaced);
      await stopClean(a.child);
    } finally {
      await killHard(a.child);
      await other.close();
    }
  },
);

test(
  'spool:lost refuses while another instance is down with its spool open, then accounts for its own rows only',
  { timeout: 120_000 },
  async () => {
    const { workspace, token } = await stores.workspace('enterprise');
    const base = { ...stores.env, ...TTL, INGEST_THREADS: '1', SHIP_INTERVAL_MS: '60000' };
    const envX = { ...base, INGEST_INSTANCE: `down-${process.pid}`, SPOOL_DIR: tempDir('down-x') };
    const envY = { ...base, INGEST_INSTANCE: `gone-${process.pid}`, SPOOL_DIR: tempDir('gone-y') };
    let x = await spawnIngest({ ...envX, INGEST_PORT: String(await freePort()) });
    const y = await spawnIngest({ ...envY, INGEST_PORT: String(await freePort()) });
    try {
      const xKeys = Array.from({ length: 20 }, (_, i) => `x-${i}`);
      const yKeys = Array.from({ length: 20 }, (_, i) => `y-${i}`);
      await Promise.all([
        acknowledged(x.url, token, workspace.id, xKeys),
        acknowledged(y.url, token, workspace.id, yKeys),
      ]);
      // Both die with their rows unshipped: X's volume survives, Y's is lost.
      await Promise.all([killHard(x.child), killHard(y.child)]);

      // Seen 40 s later (X's heartbeat stale): X's rows would be taken for Y's and released.
      const deps = {
        pool: stores.pool,
        redis: stores.redis,
        stored: new ClickHouseStoredRows(stores.clickhouse),
        prefix: stores.redisPrefix,
        hotSeconds: 600,
        pendingTtlMs: 2_000,
        waitMs: 2_000,
        now: () => Date.now() + 40_000,
      };
      await assert.rejects(
        accountLostVolume(deps, envY.INGEST_INSTANCE),
        (e: Error & { code?: string }) =>
          e.code === 'METERD_INGEST_SPOOL_OTHER_DOWN' && e.message.includes(envX.INGEST_INSTANCE),
      );

      // X comes back on its volume and ships; then Y's accounting lists exactly Y's rows.
      x = await spawnIngest({ ...envX, INGEST_PORT: String(await freePort()), SHIP_INTERVAL_MS: '50' });
      await until(
        () => storedTimes(workspace.id),
        (m) => xKeys.every((k) => m.get(k) === 1),
        30_000,
        "X's rows shipped from its volume",
      );
      const cli = await runToEnd([CLI, '--instance', envY.INGEST_INSTANCE, '--wait-ms', '40000'], {
        ...stores.env,
        ...TTL,
      });
      assert.equal(cli.code, 0, cli.stderr);
      const report = JSON.parse(cli.stdout) as LostReport;
      assert.deepEqual(report.workspaces[workspace.id]!.keys.map((k) => k.idempotency_key).sort(), [...yKeys].sort());
    } finally {
      await Promise.all([killHard(x.child), killHard(y.child)]);
    }
  },
);

test('a clean stop with everything shipped: a new volume starts without the command', { timeout: 60_000 }, async () => {
  const env = {
    ...stores.env,
    INGEST_PORT: String(await freePort()),
    INGEST_THREADS: '1',
    INGEST_INSTANCE: `clean-${process.pid}`,
    SPOOL_DIR: tempDir('clean-a'),
    SHIP_INTERVAL_MS: '50',
  };
  const { workspace, token } = await stores.workspace('enterprise');
  const first = await spawnIngest(env);
  assert.equal((await post(first.url, '/api/v1/meter', event(workspace.id, 'k1'), token)).status, 202);
  await stopClean(first.child);
  const next = await spawnIngest({ ...env, SPOOL_DIR: tempDir('clean-b') });
  await killHard(next.child);
});

test('spool:lost looks keys up with select_sequential_consistency=1 on a cluster, and without it on one server', async () => {
  const one = loadIngestConfig(stores.env);
  assert.equal(lostLookupSettings(one).select_sequential_consistency, undefined);
  const cfg = loadIngestConfig({ ...stores.env, CLICKHOUSE_CLUSTER: 'meterd_cluster' });
  // The command's lookup with its client's settings, on the real server (here one node: the
  // setting is accepted, and system.query_log shows what the query carried).
  const ch = createClickHouse({
    url: cfg.CLICKHOUSE_URL,
    database: cfg.CLICKHOUSE_DATABASE,
    user: cfg.CLICKHOUSE_USER,
    password: cfg.CLICKHOUSE_PASSWORD,
    settings: { ...lostLookupSettings(cfg), log_queries: 1 },
  });
  try {
    const ws = `ws_seq_${process.pid}_${Date.now()}`;
    const found = await new ClickHouseStoredRows(ch).find(ws, [
      { eventType: 'checkout.completed', idempotencyKey: 'k', hours: [Math.floor(Date.now() / 3_600_000)] },
    ]);
    assert.deepEqual(found, [undefined]);
    await stores.clickhouse.command({ query: 'SYSTEM FLUSH LOGS' });
    const rs = await stores.clickhouse.query({
      query: `SELECT Settings.Values[indexOf(Settings.Names, 'select_sequential_consistency')] AS v
        FROM system.query_log WHERE type = 2 AND query LIKE '%${ws}%' AND query NOT LIKE '%query_log%'`,
      format: 'JSONEachRow',
    });
    assert.deepEqual(await rs.json(), [{ v: '1' }]);
  } finally {
    await ch.close();
  }
});
