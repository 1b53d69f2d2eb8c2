import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { event, post, startTestIngest, tempDir, until, waitShipped } from './helpers.js';
import { freePort, INGEST_MAIN, killHard, spawnIngest } from './processes.js';
import { ClickHouseStoredRows } from '../src/dedupe/clickhouse.js';
import { accountLostVolume, type LostReport } from '../src/spool/identity-lost.js';

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
      const [ra, rb] = await Promise.all([batch(a.url, lostKeys), batch(other.url, shippedKeys)]);
      assert.equal(ra.status, 202);
      assert.equal(rb.status, 202);
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

      // The refusal is cleared: ingest starts on the new volume.
      a = await spawnIngest(replaced);
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
      const batch = (url: string, keys: string[]) =>
        post(url, '/api/v1/meter/batch', { events: keys.map((k) => event(workspace.id, k)) }, token);
      const [rx, ry] = await Promise.all([batch(x.url, xKeys), batch(y.url, yKeys)]);
      assert.equal(rx.status, 202);
      assert.equal(ry.status, 202);
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
  first.child.kill('SIGTERM');
  await new Promise((r) => first.child.once('exit', r));
  const next = await spawnIngest({ ...env, SPOOL_DIR: tempDir('clean-b') });
  await killHard(next.child);
});
