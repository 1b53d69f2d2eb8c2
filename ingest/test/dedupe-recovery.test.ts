import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { GateProxy, openTestStores, type TestStores } from '@meterd/core/testing';
import { redisEpochKey } from '@meterd/core/contracts';
import { clickHouseFromConfig } from '@meterd/core/clickhouse';
import { loadIngestConfig } from '../src/config.js';
import { RedisDeduper } from '../src/dedupe/redis.js';
import { ClickHouseStoredRows } from '../src/dedupe/clickhouse.js';
import { DedupeRecovery } from '../src/dedupe/recovery.js';
import { QUIET } from './helpers.js';

/** Recovery after Redis lost its data (docs/redis.md), driven directly against the real stores. */
let stores: TestStores;
before(async () => {
  stores = await openTestStores('deduperec');
});
after(() => stores.close());

function parts(prefix: string, clickhousePort?: number, timeoutMs = 10_000) {
  const url = new URL(stores.env.CLICKHOUSE_URL!);
  if (clickhousePort !== undefined) url.port = String(clickhousePort);
  const cfg = loadIngestConfig({ ...stores.env, CLICKHOUSE_URL: url.toString() });
  const ch = clickHouseFromConfig(cfg, { requestTimeoutMs: timeoutMs });
  const deduper = new RedisDeduper(stores.redis, {
    windowSeconds: 35 * 86_400,
    pendingTtlMs: 10_000,
    hotSeconds: 60,
    prefix,
  });
  return { ch, deduper, rows: new ClickHouseStoredRows(ch) };
}

test('two workspaces recovering at once on one thread after a loss both wait for the spool, then both recover', async () => {
  const prefix = `${stores.redisPrefix}:r5`;
  const { ch, deduper, rows } = parts(prefix);
  try {
    await deduper.readEpoch();
    // Redis "lost its data": only this test's epoch key (own prefix) goes.
    await stores.redis.del(redisEpochKey(prefix));
    let polls = 0;
    const recovery = new DedupeRecovery(deduper, rows, rows, {
      windowSeconds: 35 * 86_400,
      markSpool: () => () => ++polls > 4,
      drainMs: 5_000,
      log: QUIET,
    });
    const a = (await stores.workspace('free')).workspace.id;
    const b = (await stores.workspace('free')).workspace.id;
    await Promise.all([recovery.recover(a, Date.now()), recovery.recover(b, Date.now())]);
    assert.ok(polls > 4, 'waited for the spool');
    recovery.close();
  } finally {
    await ch.close();
  }
});

test('a recovery waiting for its turn behind stalled ones gives up after drainMs (its claim answers 503)', async () => {
  const url = new URL(stores.env.CLICKHOUSE_URL!);
  const proxy = await GateProxy.start({ host: url.hostname, port: Number(url.port) });
  const { ch, deduper, rows } = parts(`${stores.redisPrefix}:q`, proxy.port);
  try {
    await deduper.readEpoch();
    const recovery = new DedupeRecovery(deduper, rows, rows, {
      windowSeconds: 35 * 86_400,
      markSpool: () => () => true,
      drainMs: 500,
      log: QUIET,
    });
    proxy.hold();
    const ids = await Promise.all([0, 1, 2, 3, 4].map(async () => (await stores.workspace('free')).workspace.id));
    const stalled = ids.slice(0, 4).map((id) => recovery.recover(id, Date.now()));
    const started = Date.now();
    await assert.rejects(recovery.recover(ids[4]!, Date.now()), /no recovery slot/);
    assert.ok(Date.now() - started < 5_000);
    proxy.release();
    await Promise.all(stalled);
    recovery.close();
  } finally {
    proxy.release();
    await ch.close();
    await proxy.close();
  }
});

test('a workspace whose recovery failed waits a backoff before the next try, without a query meanwhile', async () => {
  const url = new URL(stores.env.CLICKHOUSE_URL!);
  const proxy = await GateProxy.start({ host: url.hostname, port: Number(url.port) });
  const { ch, deduper, rows } = parts(`${stores.redisPrefix}:b`, proxy.port, 300);
  try {
    await deduper.readEpoch();
    const recovery = new DedupeRecovery(deduper, rows, rows, {
      windowSeconds: 35 * 86_400,
      markSpool: () => () => true,
      drainMs: 5_000,
      log: QUIET,
    });
    const ws = (await stores.workspace('free')).workspace.id;
    proxy.hold();
    await assert.rejects(recovery.recover(ws, Date.now()));
    const held = proxy.heldBytes;
    await assert.rejects(recovery.recover(ws, Date.now()), /recovery failed recently/);
    assert.equal(proxy.heldBytes, held, 'no query sent during the backoff');
    proxy.release();
    recovery.close();
  } finally {
    proxy.release();
    await ch.close();
    await proxy.close();
  }
});
