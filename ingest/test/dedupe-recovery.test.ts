import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { GateProxy, openTestStores, type TestStores } from '@meterd/core/testing';
import { dedupeEpochMarker, dedupeRegistryKey, dedupeShippedKey } from '@meterd/core/contracts';
import { clickHouseFromConfig } from '@meterd/core/clickhouse';
import { loadIngestConfig } from '../src/config.js';
import { RedisDeduper } from '../src/dedupe/redis.js';
import { ClickHouseStoredRows } from '../src/dedupe/clickhouse.js';
import { DedupeRecovery } from '../src/dedupe/recovery.js';
import { ShippedMarks } from '../src/dedupe/shipped.js';
import { spoolLine, toRow } from '../src/rows.js';
import { newEventId } from '@meterd/core/ids';
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

const ALL_SHIPPED = { allShippedThrough: () => true };

test('a new workspace is recovered after one query; one whose slot lost its marker waits until every thread has shipped', async () => {
  const prefix = `${stores.redisPrefix}:r5`;
  const { ch, deduper, rows } = parts(prefix);
  try {
    // A registry from long ago, and every thread has shipped what it acknowledged up to `shippedTo`.
    await stores.redis.hset(dedupeRegistryKey(prefix), '~gen', '0123456789abcdef:1000');
    let shippedTo = Date.now() - 1;
    let asked = 0;
    const recovery = new DedupeRecovery(deduper, rows, rows, {
      windowSeconds: 35 * 86_400,
      shipped: {
        allShippedThrough: (t) => {
          asked++;
          return t <= shippedTo;
        },
      },
      shipWaitMs: 60_000,
      drainMs: 5_000,
      log: QUIET,
    });
    const a = (await stores.workspace('free')).workspace.id;
    const b = (await stores.workspace('free')).workspace.id;
    await Promise.all([recovery.recover(a, Date.now()), recovery.recover(b, Date.now())]);
    assert.equal(await stores.redis.hexists(dedupeRegistryKey(prefix), a), 1, 'registered');
    assert.equal(await stores.redis.get(dedupeEpochMarker(prefix, a)), '0123456789abcdef', 'marked');
    // The node holding a's slot lost its data; the registry (another slot) did not.
    await stores.redis.del(dedupeEpochMarker(prefix, a));
    let done = false;
    const p = recovery.recover(a, Date.now()).then(() => (done = true));
    const polls = asked;
    await until(() => asked > polls + 5);
    assert.equal(done, false, 'a listed workspace is not recovered before every thread has shipped');
    assert.equal(await stores.redis.get(dedupeEpochMarker(prefix, a)), null);
    shippedTo = Date.now() + 60_000;
    await p;
    assert.equal(await stores.redis.get(dedupeEpochMarker(prefix, a)), '0123456789abcdef');
    recovery.close();
  } finally {
    await ch.close();
  }
});

test('a registry that lost its data makes unlisted workspaces wait too, until every thread shipped past its birth', async () => {
  const prefix = `${stores.redisPrefix}:g`;
  const { ch, deduper, rows } = parts(prefix);
  try {
    const shippedTo = Date.now();
    await stores.redis.del(dedupeRegistryKey(prefix));
    const recovery = new DedupeRecovery(deduper, rows, rows, {
      windowSeconds: 35 * 86_400,
      shipped: { allShippedThrough: (t) => t <= shippedTo },
      shipWaitMs: 300,
      drainMs: 5_000,
      log: QUIET,
    });
    const ws = (await stores.workspace('free')).workspace.id;
    // Born after `shippedTo`: a workspace whose marker went with the registry may have events in a spool.
    await assert.rejects(recovery.recover(ws, Date.now()), /have not shipped/);
    assert.equal(await stores.redis.get(dedupeEpochMarker(prefix, ws)), null, 'nothing trusted meanwhile');
    recovery.close();
  } finally {
    await ch.close();
  }
});

test('a thread that died with rows unshipped holds recovery back only until its heartbeat is stale', async () => {
  const prefix = `${stores.redisPrefix}:dead`;
  const { ch, deduper, rows } = parts(prefix);
  const key = dedupeShippedKey(prefix);
  // This thread has shipped everything; the dead one last said "shipped through 0" and went silent.
  const marks = new ShippedMarks(stores.redis, {
    key,
    id: 'live',
    markSpool: () => () => true,
    lastClaimAt: () => 0,
    inFlightMs: 0,
    hotSeconds: 60,
    intervalMs: 100,
    staleMs: 1_500,
    log: QUIET,
  });
  try {
    const recovery = new DedupeRecovery(deduper, rows, rows, {
      windowSeconds: 35 * 86_400,
      shipped: marks,
      shipWaitMs: 20_000,
      drainMs: 5_000,
      log: QUIET,
    });
    const ws = (await stores.workspace('free')).workspace.id;
    await deduper.register(ws);
    await stores.redis.hset(key, 'dead', `0:${Date.now()}`);
    marks.start();
    const started = Date.now();
    await recovery.recover(ws, Date.now());
    const took = Date.now() - started;
    assert.ok(took >= 1_200, `waited for the dead thread while its heartbeat was fresh (${took} ms)`);
    assert.ok(took < 10_000, `then went on without it (${took} ms)`);
    assert.ok(await stores.redis.get(dedupeEpochMarker(prefix, ws)));
    recovery.close();
  } finally {
    await marks.stop();
    await stores.redis.del(key);
    await ch.close();
  }
});

test('a recovery waiting for its turn behind stalled ones gives up after drainMs (its claim answers 503)', async () => {
  const url = new URL(stores.env.CLICKHOUSE_URL!);
  const proxy = await GateProxy.start({ host: url.hostname, port: Number(url.port) });
  const { ch, deduper, rows } = parts(`${stores.redisPrefix}:q`, proxy.port);
  try {
    const recovery = new DedupeRecovery(deduper, rows, rows, {
      windowSeconds: 35 * 86_400,
      shipped: ALL_SHIPPED,
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
    const recovery = new DedupeRecovery(deduper, rows, rows, {
      windowSeconds: 35 * 86_400,
      shipped: ALL_SHIPPED,
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

async function until(ok: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('a thread that sent a claim counts as settled only once that claim can no longer be acknowledged', async () => {
  const key = dedupeShippedKey(`${stores.redisPrefix}:settled`);
  let claimAt = 0;
  const marks = new ShippedMarks(stores.redis, {
    key,
    id: 'busy',
    markSpool: () => () => true,
    lastClaimAt: () => claimAt,
    inFlightMs: 800,
    hotSeconds: 60,
    intervalMs: 100,
    log: QUIET,
  });
  await new Promise((r) => setTimeout(r, 20)); // the claim is sent after the thread started
  claimAt = Date.now();
  marks.start();
  try {
    await until(() => marks.allShippedThrough(claimAt));
    const took = Date.now() - claimAt;
    assert.ok(took >= 800, `a claim sent at t may be acknowledged until t + inFlightMs (${took} ms)`);
  } finally {
    await marks.stop();
    await stores.redis.del(key);
  }
});

test('a rebuild longer than its mark renews the mark while it makes progress, and stops renewing once closed', async () => {
  const prefix = `${stores.redisPrefix}:renew`;
  const { ch, deduper } = parts(prefix);
  const MARK_SECONDS = 1;
  // Each day of the rebuild takes 40 ms more: ~72 days, about 3 s, three times the mark's lifetime.
  let slow = true;
  let days = 0;
  class SlowScans extends ClickHouseStoredRows {
    override async storedKeys(workspaceId: string, fromMs: number, toMs: number, sinceMs: number) {
      days++;
      if (slow) await new Promise((r) => setTimeout(r, 40));
      return super.storedKeys(workspaceId, fromMs, toMs, sinceMs);
    }
  }
  const recovery = (): DedupeRecovery =>
    new DedupeRecovery(deduper, new ClickHouseStoredRows(ch), new SlowScans(ch), {
      windowSeconds: 35 * 86_400,
      shipped: ALL_SHIPPED,
      drainMs: 5_000,
      log: QUIET,
      rebuildMarkSeconds: MARK_SECONDS,
    });
  try {
    await stores.redis.hset(dedupeRegistryKey(prefix), '~gen', '0123456789abcdef:1000');
    // Listed and with an event in ClickHouse: a workspace whose slot lost its data.
    const ws = (await stores.workspace('free')).workspace.id;
    await stores.redis.hset(dedupeRegistryKey(prefix), ws, '1');
    const row = toRow(
      {
        workspace_id: ws,
        event_type: 'checkout.completed',
        quantity: 1,
        gmv_cents: 1,
        currency: 'USD',
        idempotency_key: 'renew-1',
        occurred_at_ms: Date.now(),
      },
      newEventId(),
      Date.now(),
    );
    await stores.clickhouse.insert({ table: 'events', values: [JSON.parse(spoolLine(row))], format: 'JSONEachRow' });
    const marker = dedupeEpochMarker(prefix, ws);

    const first = recovery();
    const started = Date.now();
    await first.recover(ws, Date.now());
    let lapsed = false;
    let mark: string | null = '';
    while (mark === '' || mark!.includes(':r:')) {
      mark = await stores.redis.get(marker);
      if (mark === null) lapsed = true;
      if (lapsed || Date.now() - started > 60_000) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.equal(lapsed, false, `the mark lapsed mid-rebuild, after ${Date.now() - started} ms`);
    assert.equal(mark, '0123456789abcdef', 'rebuilt and marked complete');
    const took = Date.now() - started;
    assert.ok(took > 2 * MARK_SECONDS * 1000, `the rebuild outlived its mark's lifetime (${took} ms, ${days} days)`);
    first.close();

    // Lost again; a recovery closed mid-rebuild stops renewing, so its mark lapses.
    await stores.redis.del(marker);
    const second = recovery();
    const daysBefore = days;
    await second.recover(ws, Date.now());
    assert.match((await stores.redis.get(marker)) ?? '', /:r:/);
    await until(() => days > daysBefore + 3);
    second.close();
    slow = false;
    const closedAt = Date.now();
    while ((await stores.redis.get(marker)) !== null) {
      assert.ok(Date.now() - closedAt < 10_000, 'the mark of a closed recovery still renewed after 10 s');
      await new Promise((r) => setTimeout(r, 25));
    }
  } finally {
    await ch.close();
  }
});
