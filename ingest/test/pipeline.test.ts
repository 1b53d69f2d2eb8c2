import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { GateProxy, openTestStores, type TestStores } from '@meterd/core/testing';
import { clickHouseFromConfig } from '@meterd/core/clickhouse';
import { dedupeShippedKey } from '@meterd/core/contracts';
import type { MeterEvent } from '@meterd/core/event';
import { MetricsRegistry } from '@meterd/core/metrics';
import { loadIngestConfig } from '../src/config.js';
import { md5Key, RedisDeduper } from '../src/dedupe/redis.js';
import { ClickHouseStoredRows } from '../src/dedupe/clickhouse.js';
import { DedupeRecovery } from '../src/dedupe/recovery.js';
import { ShippedMarks } from '../src/dedupe/shipped.js';
import { defineIngestMetrics } from '../src/metrics.js';
import { Pipeline, type SubmitResult } from '../src/pipeline.js';
import { periodOf } from '@meterd/core/plans';
import { SpoolWriter } from '../src/spool/writer.js';
import { hotGone, QUIET, tempDir, until } from './helpers.js';

/**
 * The accept path driven directly (every submit of one synchronous block lands in one tick),
 * against the real Redis and a real ClickHouse behind a proxy the test can hold.
 */
let stores: TestStores;
before(async () => {
  stores = await openTestStores('pipeline');
});
after(() => stores.close());

const WINDOW = 35 * 86_400;

async function build(
  o: {
    maxClaimMs?: number;
    hotSeconds?: number;
    clickhouseTimeoutMs?: number;
    hash?: (key: string) => string;
    /** Fails a commit while it answers true (Redis unreachable for that call), given its attempt number. */
    failCommit?: (attempt: number) => boolean;
  } = {},
) {
  const url = new URL(stores.env.CLICKHOUSE_URL!);
  const proxy = await GateProxy.start({ host: url.hostname, port: Number(url.port) });
  url.port = String(proxy.port);
  const cfg = loadIngestConfig({ ...stores.env, CLICKHOUSE_URL: url.toString() });
  const ch = clickHouseFromConfig(cfg, { requestTimeoutMs: o.clickhouseTimeoutMs ?? 30_000 });
  const deduper = new RedisDeduper(stores.redis, {
    windowSeconds: WINDOW,
    pendingTtlMs: 10_000,
    hotSeconds: o.hotSeconds ?? 60,
    prefix: stores.redisPrefix,
    ...(o.hash === undefined ? {} : { hash: o.hash }),
  });
  let commits = 0;
  const commit = deduper.commit.bind(deduper);
  deduper.commit = (...args) => {
    if (o.failCommit?.(++commits)) return Promise.reject(new Error('Connection is closed.'));
    return commit(...args);
  };
  const rows = new ClickHouseStoredRows(ch);
  const recovery = new DedupeRecovery(deduper, rows, rows, {
    windowSeconds: WINDOW,
    // No Redis loss here: a new workspace is recovered without waiting for any spool.
    shipped: { allShippedThrough: () => true },
    drainMs: 20_000,
    log: QUIET,
  });
  const spool = SpoolWriter.open(tempDir('pipeline'), { segmentBytes: 1 << 20, fsync: 'never', log: QUIET });
  const metrics = defineIngestMetrics(new MetricsRegistry(1, 0));
  // Nothing ships here (no shipper): every acknowledged event stays in the spool.
  const shipped = new ShippedMarks(stores.redis, {
    key: dedupeShippedKey(stores.redisPrefix),
    id: 'pipeline-test',
    markSpool: () => () => false,
    lastClaimAt: () => 0,
    inFlightMs: 0,
    hotSeconds: o.hotSeconds ?? 60,
    intervalMs: 1_000,
    log: QUIET,
  });
  const pipeline = new Pipeline(deduper, rows, recovery, shipped, spool, metrics, QUIET, o.maxClaimMs ?? 5_000);
  const submit = (workspaceId: string, keys: string[]) => {
    const events: MeterEvent[] = keys.map((k) => ({
      workspace_id: workspaceId,
      event_type: 'checkout.completed',
      quantity: 1,
      gmv_cents: 100,
      currency: 'USD',
      idempotency_key: k,
      occurred_at_ms: Date.now(),
    }));
    let answer: SubmitResult | undefined;
    const done = new Promise<SubmitResult>((resolve) =>
      pipeline.submit({ workspaceId, limit: null, events, done: (r) => resolve((answer = r)) }),
    );
    return { done, answered: () => answer !== undefined };
  };
  const close = async () => {
    proxy.release();
    recovery.close();
    await spool.close();
    await ch.close();
    await proxy.close();
  };
  return { proxy, submit, close, deduper, pipeline, commits: () => commits };
}

test('a workspace waiting on ClickHouse holds neither the other workspaces of its tick nor the next tick', async () => {
  const p = await build();
  try {
    const slow = (await stores.workspace('free')).workspace.id;
    const fast = (await stores.workspace('free')).workspace.id;
    // `fast` is known to this Redis; `slow` is not, so its first claim recovers from ClickHouse.
    await p.submit(fast, ['warm']).done;
    p.proxy.hold();
    const a = p.submit(slow, ['a1']);
    const b = p.submit(fast, ['b1']);
    const rb = await b.done;
    assert.equal(rb.results[0]!.kind, 'stored');
    assert.equal(a.answered(), false, 'the slow workspace still waits on ClickHouse');
    const c = await p.submit(fast, ['c1']).done;
    assert.equal(c.results[0]!.kind, 'stored', 'the next tick went ahead too');
    assert.equal(a.answered(), false);
    p.proxy.release();
    const ra = await a.done;
    assert.equal(ra.results[0]!.kind, 'stored');
  } finally {
    await p.close();
  }
});

test('ClickHouse unreachable: only the older duplicates that need it get 503, new events of the same request are stored', async () => {
  const p = await build({ hotSeconds: 1, clickhouseTimeoutMs: 1_000 });
  try {
    const ws = (await stores.workspace('free')).workspace.id;
    assert.equal((await p.submit(ws, ['old']).done).results[0]!.kind, 'stored');
    await hotGone(stores, ws, 'old');
    p.proxy.hold();
    const r = await p.submit(ws, ['old', 'fresh']).done;
    assert.deepEqual(
      r.results.map((x) => (x.kind === 'rejected' ? x.code : x.kind)),
      ['service_unavailable', 'stored'],
    );
  } finally {
    await p.close();
  }
});

test('a retry whose original is still in a spool past the hot window is answered 409, not stored again', async () => {
  const p = await build({ hotSeconds: 1 });
  try {
    const ws = (await stores.workspace('free')).workspace.id;
    assert.equal((await p.submit(ws, ['queued']).done).results[0]!.kind, 'stored');
    await hotGone(stores, ws, 'queued');
    // The tier remembers the key, ClickHouse does not hold it yet: not a hash collision.
    const r = await p.submit(ws, ['queued']).done;
    assert.deepEqual(
      r.results.map((x) => (x.kind === 'rejected' ? x.code : x.kind)),
      ['idempotency_key_in_use'],
    );
    assert.equal(r.used, 1, 'counted once');
  } finally {
    await p.close();
  }
});

test('each key is hashed once per tick: the claim and the commit share the hashes', async () => {
  let calls = 0;
  const p = await build({
    hash: (k) => {
      calls++;
      return md5Key(k);
    },
  });
  try {
    const ws = (await stores.workspace('free')).workspace.id;
    await p.submit(ws, ['warm']).done;
    const keys = Array.from({ length: 50 }, (_, i) => `k${i}`);
    await until(
      () => stores.redis.get(`${stores.redisPrefix}:{${ws}}:d:checkout.completed:warm`),
      (v) => !v!.startsWith('P:'),
    );
    calls = 0;
    const r = await p.submit(ws, keys).done;
    assert.ok(r.results.every((x) => x.kind === 'stored'));
    // The commit runs after the answer: wait for its rows.
    await until(
      () => stores.redis.get(`${stores.redisPrefix}:{${ws}}:d:checkout.completed:k49`),
      (v) => v !== null && !v.startsWith('P:'),
    );
    assert.equal(calls, keys.length);
  } finally {
    await p.close();
  }
});

const keyOf = (ws: string, k: string) => `${stores.redisPrefix}:{${ws}}:d:checkout.completed:${k}`;

test('a commit Redis refuses is retried until it lands: the stored events count once, and their retries are duplicates', async () => {
  // The first two attempts fail. Without the retry the keys stayed pending claims, uncounted, and
  // once those expired a client's retry was stored again.
  const p = await build({ failCommit: (attempt) => attempt <= 2 });
  try {
    const ws = (await stores.workspace('free')).workspace.id;
    const first = await p.submit(ws, ['a', 'b']).done;
    assert.deepEqual(
      first.results.map((r) => r.kind),
      ['stored', 'stored'],
    );
    await until(
      () => stores.redis.get(keyOf(ws, 'b')),
      (v) => v !== null && !v.startsWith('P:'),
      15_000,
      'the commit to land',
    );
    assert.equal(p.commits(), 3);
    assert.equal(await p.deduper.used(ws, periodOf(Date.now())), 2);
    const again = await p.submit(ws, ['a', 'b']).done;
    assert.deepEqual(
      again.results.map((r) => r.kind),
      ['duplicate', 'duplicate'],
    );
  } finally {
    await p.close();
  }
});

test('close gives a commit still failing one last attempt and schedules none after it', async () => {
  let down = true;
  const p = await build({ failCommit: () => down });
  try {
    const ws = (await stores.workspace('free')).workspace.id;
    await p.submit(ws, ['c']).done;
    await until(
      async () => p.commits(),
      (n) => n >= 2,
      15_000,
      'a retry',
    );
    down = false;
    const before = p.commits();
    await p.pipeline.close();
    assert.ok(p.commits() >= before + 1, 'the last attempt was made at close');
    assert.ok(!(await stores.redis.get(keyOf(ws, 'c')))!.startsWith('P:'), 'it landed');
    assert.equal(await p.deduper.used(ws, periodOf(Date.now())), 1);
  } finally {
    await p.close();
  }
});
