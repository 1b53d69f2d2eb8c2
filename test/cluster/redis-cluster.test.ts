import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, storeVars } from '@meterd/core/config';
import { quotaKey, KEY_REVOKED_CHANNEL } from '@meterd/core/contracts';
import { periodOf } from '@meterd/core/plans';
import { createRedis, redisPrimaries, scanEveryPrimary, type Redis } from '@meterd/core/store';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { ROOT, freePort, startService, waitFor, type Service } from '../support/services.js';
import { lockClusterStacks } from '../support/cluster-lock.js';

/**
 * meterd on a 3-primary Redis Cluster (infra/stack/redis-cluster.sh): control-api, ingest and the
 * aggregator run as their own processes with REDIS_CLUSTER_NODES, so every Redis command they send
 * goes through ioredis's Cluster client and must keep its keys in one hash slot. Checked: signup
 * and keys, single and batch meter calls with duplicates (0 lost, 0 doubled), the quota counter
 * and its enforcement, QuotaWatch over workspaces in different slots, the rejection log, key
 * revocation reaching ingest over pub/sub, dashboard sessions and the sign-in rate limit. A raw
 * MGET across two workspaces' counters fails CROSSSLOT, so the suite runs on cluster semantics.
 */
const SCRIPT = join(ROOT, 'infra/stack/redis-cluster.sh');
let stores: TestStores;
let spoolDir: string;
let startedCluster = false;
let seeds = '';
let cluster: Redis;
let ingest: Service;
let control: Service;
let aggregator: Service;

function clusterScript(cmd: 'up' | 'down'): string {
  const r = spawnSync('bash', [SCRIPT, cmd], { encoding: 'utf8', timeout: 180_000 });
  assert.equal(r.status, 0, `redis-cluster.sh ${cmd} failed:\n${r.stderr}`);
  return r.stdout.trim();
}

let unlock: (() => Promise<void>) | undefined;

before(async () => {
  unlock = await lockClusterStacks();
  const [state, nodes] = clusterScript('up').split(' ');
  startedCluster = state === 'started';
  seeds = nodes!;
  stores = await openTestStores('rediscluster');
  const cfg = loadConfig(storeVars, { ...process.env, REDIS_CLUSTER_NODES: seeds });
  cluster = createRedis(cfg);
  spoolDir = mkdtempSync(join(tmpdir(), 'meterd-rediscluster-'));
  const env = { ...stores.env, REDIS_CLUSTER_NODES: seeds, LOG_LEVEL: 'warn' };
  const [ip, cp, ap] = [await freePort(), await freePort(), await freePort()];
  ingest = await startService('ingest', 'ingest', ip, {
    ...env,
    INGEST_PORT: String(ip),
    INGEST_THREADS: '1',
    SPOOL_DIR: spoolDir,
    SHIP_INTERVAL_MS: '50',
    // Longer than the test: only the revocation's announcement can drop a cached key.
    KEY_CACHE_TTL_MS: '600000',
  });
  control = await startService('control-api', 'control-api', cp, {
    ...env,
    CONTROL_API_PORT: String(cp),
    NODE_ENV: 'development',
    WEBHOOK_WORKER: 'false',
    QUOTA_CHECK_MS: '200',
    // Every test signs up its own workspaces from this one address.
    SIGNUP_BURST: '100',
  });
  aggregator = await startService('aggregator', 'aggregator', ap, {
    ...env,
    AGGREGATOR_PORT: String(ap),
    AGGREGATOR_POLL_MS: '100',
  });
});

after(async () => {
  try {
    await Promise.all([control?.stop(), ingest?.stop(), aggregator?.stop()]);
    if (cluster !== undefined) {
      // The test's keys, node by node; UNLINK one key a call (keys of several slots cannot share one).
      await scanEveryPrimary(cluster, `${stores.redisPrefix}:*`, 1000, async (keys, node) => {
        await Promise.all(keys.map((k) => node.unlink(k)));
      });
      await cluster.quit();
    }
    if (spoolDir !== undefined) rmSync(spoolDir, { recursive: true, force: true });
    await stores?.close();
  } finally {
    if (startedCluster) clusterScript('down');
    await unlock?.();
  }
});

async function call(
  base: string,
  method: string,
  path: string,
  token: string | null,
  body?: unknown,
  headers: Record<string, string> = {},
) {
  const r = await fetch(base + path, {
    method,
    headers: {
      ...(token === null ? {} : { authorization: `Bearer ${token}` }),
      ...headers,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await r.text();
  return { status: r.status, headers: r.headers, json: (text === '' ? {} : JSON.parse(text)) as any };
}

const event = (ws: string, key: string, extra: Record<string, unknown> = {}) => ({
  workspace_id: ws,
  event_type: 'api.call',
  idempotency_key: key,
  ...extra,
});

async function signup(slug: string): Promise<{ id: string; token: string }> {
  const r = await call(control.url, 'POST', '/api/v1/signup', null, { slug, display_name: slug });
  assert.equal(r.status, 201, JSON.stringify(r.json));
  return { id: r.json.workspace.id, token: r.json.api_key.token };
}

async function countInClickHouse(ws: string): Promise<{ rows: number; distinct: number }> {
  const rs = await stores.clickhouse.query({
    query: `SELECT toString(count()) AS rows, toString(uniqExact(idempotency_key)) AS d FROM events WHERE workspace_id = '${ws}'`,
    format: 'JSONEachRow',
  });
  const [row] = (await rs.json()) as { rows: string; d: string }[];
  return { rows: Number(row!.rows), distinct: Number(row!.d) };
}

test('the suite runs on cluster semantics: a multi-key command across two workspaces fails CROSSSLOT', async () => {
  const period = periodOf(Date.now());
  const a = quotaKey(stores.redisPrefix, 'ws_slot_a', period);
  const b = quotaKey(stores.redisPrefix, 'ws_slot_b', period);
  assert.notEqual(await cluster.cluster('KEYSLOT', a), await cluster.cluster('KEYSLOT', b));
  // ioredis refuses it before sending; a node asked directly answers CROSSSLOT.
  await assert.rejects(cluster.mget(a, b), /same slot/);
  const nodes = redisPrimaries(cluster);
  assert.equal(nodes.length, 3);
  await assert.rejects(nodes[0]!.mget(a, b), /CROSSSLOT/);
});

test('PUBLISH on one primary reaches a subscriber connected to another (classic pub/sub is cluster-wide)', async () => {
  const [x, , z] = seeds.split(',');
  const sub = createRedis(new URL(`redis://${x}`), { enableAutoPipelining: false });
  const pub = createRedis(new URL(`redis://${z}`));
  try {
    await sub.subscribe(KEY_REVOKED_CHANNEL);
    const got = new Promise<string>((resolve) => sub.once('message', (_c: string, m: string) => resolve(m)));
    await pub.publish(KEY_REVOKED_CHANNEL, 'probe');
    assert.equal(await got, 'probe');
  } finally {
    sub.disconnect();
    await pub.quit();
  }
});

test('signup, meter (single and batch, with duplicates), quota, QuotaWatch and rejections on the cluster', async () => {
  const a = await signup(`rc-a-${stores.id.slice(-8)}`);
  const b = await signup(`rc-b-${stores.id.slice(-8)}`);
  const period = periodOf(Date.now());
  assert.notEqual(
    await cluster.cluster('KEYSLOT', quotaKey(stores.redisPrefix, a.id, period)),
    await cluster.cluster('KEYSLOT', quotaKey(stores.redisPrefix, b.id, period)),
  );
  const meter = (token: string, body: unknown) => call(ingest.url, 'POST', '/api/v1/meter', token, body);
  const batch = (token: string, events: unknown[]) =>
    call(ingest.url, 'POST', '/api/v1/meter/batch', token, { events });

  const first = await meter(a.token, event(a.id, 'single-1'));
  assert.equal(first.status, 202, JSON.stringify(first.json));
  assert.equal(first.json.duplicate, false);
  const again = await meter(a.token, event(a.id, 'single-1'));
  assert.equal(again.status, 202);
  assert.equal(again.json.duplicate, true);
  assert.equal(again.json.id, first.json.id);

  // Five batches of 100: 80 new keys, then 20 of them again in the same batch.
  const batchOf = (j: number) => [
    ...Array.from({ length: 80 }, (_, i) => event(a.id, `b${j}-${i}`)),
    ...Array.from({ length: 20 }, (_, i) => event(a.id, `b${j}-${i}`)),
  ];
  for (let j = 0; j < 5; j++) {
    const r = await batch(a.token, batchOf(j));
    assert.equal(r.status, 202, JSON.stringify(r.json));
    assert.deepEqual([r.json.accepted, r.json.duplicates, r.json.rejected], [80, 20, 0]);
  }
  const replay = await batch(a.token, batchOf(0));
  assert.deepEqual([replay.json.accepted, replay.json.duplicates, replay.json.rejected], [0, 100, 0]);
  assert.equal(Number(await cluster.get(quotaKey(stores.redisPrefix, a.id, period))), 401);

  // Up to the free plan's 500 events, then refused: the counter lives on the cluster.
  const fill = await batch(
    a.token,
    Array.from({ length: 99 }, (_, i) => event(a.id, `fill-${i}`)),
  );
  assert.equal(fill.json.accepted, 99);
  const over = await meter(a.token, event(a.id, 'over-quota'));
  assert.equal(over.status, 429);
  assert.equal(over.json.error.code, 'plan_quota_exceeded');
  assert.equal(Number(await cluster.get(quotaKey(stores.redisPrefix, a.id, period))), 500);

  // B in another slot: one event and one refusal, so QuotaWatch and the rejection log see both.
  assert.equal((await meter(b.token, event(b.id, 'b-1'))).status, 202);
  // Refused together, so one flush of ingest's rejection log holds both workspaces (two slots).
  const refused = await Promise.all([
    meter(b.token, event(b.id, 'b-bad', { currency: 'EURO' })),
    meter(a.token, event(a.id, 'a-bad', { currency: 'EURO' })),
  ]);
  assert.deepEqual(
    refused.map((r) => r.status),
    [400, 400],
  );

  // QuotaWatch reads every workspace's counter (one slot each): A crossed 80 % and 100 %.
  await waitFor('quota warnings of A', async () => {
    const { rows } = await stores.pool.query(
      `SELECT threshold FROM quota_warnings WHERE workspace_id = $1 ORDER BY threshold`,
      [a.id],
    );
    return rows.map((r) => Number(r.threshold)).join(',') === '80,100';
  });

  // The rejection log, written by ingest per workspace, read back by the control API.
  for (const w of [a, b])
    await waitFor(`rejections of ${w.id}`, async () => {
      const r = await call(control.url, 'GET', `/api/v1/workspaces/${w.id}/events/rejections`, w.token);
      return r.status === 200 && r.json.data.some((x: { code: string }) => x.code === 'invalid_currency');
    });

  // 0 lost, 0 doubled: every distinct key once in ClickHouse.
  await waitFor('A’s events in ClickHouse', async () => (await countInClickHouse(a.id)).distinct === 500);
  await waitFor('B’s event in ClickHouse', async () => (await countInClickHouse(b.id)).distinct === 1);
  assert.deepEqual(await countInClickHouse(a.id), { rows: 500, distinct: 500 });
  assert.deepEqual(await countInClickHouse(b.id), { rows: 1, distinct: 1 });
});

/**
 * Moves every key of `slot` to another primary the way `redis-cli --cluster reshard` does
 * (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE everywhere), while the services keep their
 * old slot map: their next command for the slot is answered MOVED. Returns how many keys moved.
 */
async function moveSlot(slot: number): Promise<number> {
  const nodes = redisPrimaries(cluster);
  const ids = await Promise.all(nodes.map((n) => n.cluster('MYID') as Promise<string>));
  const owners = await cluster.cluster('SLOTS');
  const ownerId = owners.find(([from, to]) => from <= slot && slot <= to)![2]![2];
  const src = nodes[ids.indexOf(ownerId)]!;
  const dstIndex = (ids.indexOf(ownerId) + 1) % nodes.length;
  const dst = nodes[dstIndex]!;
  await dst.cluster('SETSLOT', slot, 'IMPORTING', ownerId);
  await src.cluster('SETSLOT', slot, 'MIGRATING', ids[dstIndex]!);
  let moved = 0;
  for (;;) {
    const keys = (await src.cluster('GETKEYSINSLOT', slot, 100)) as string[];
    if (keys.length === 0) break;
    await src.migrate(dst.options.host!, dst.options.port!, '', 0, 5_000, 'KEYS', ...keys);
    moved += keys.length;
  }
  for (const n of nodes) await n.cluster('SETSLOT', slot, 'NODE', ids[dstIndex]!);
  return moved;
}

test('a workspace whose slot moved to another primary: ingest follows MOVED, nothing forgotten', async () => {
  const w = await signup(`rc-m-${stores.id.slice(-8)}`);
  const keys = Array.from({ length: 50 }, (_, i) => event(w.id, `m-${i}`));
  const send = (events: unknown[]) => call(ingest.url, 'POST', '/api/v1/meter/batch', w.token, { events });
  assert.equal((await send(keys)).json.accepted, 50);
  const counter = quotaKey(stores.redisPrefix, w.id, periodOf(Date.now()));
  const slot = (await cluster.cluster('KEYSLOT', counter)) as number;
  // The counter, the epoch marker and the 50 pending-then-committed claims, at least.
  assert.ok((await moveSlot(slot)) >= 52);
  // The moved claims still answer duplicates, the moved counter keeps counting.
  const again = await send(keys);
  assert.deepEqual([again.json.accepted, again.json.duplicates], [0, 50]);
  const more = await send(Array.from({ length: 10 }, (_, i) => event(w.id, `m-new-${i}`)));
  assert.equal(more.json.accepted, 10);
  assert.equal(Number(await cluster.get(counter)), 60);
  await waitFor(
    'the moved workspace’s events in ClickHouse',
    async () => (await countInClickHouse(w.id)).distinct === 60,
  );
  assert.deepEqual(await countInClickHouse(w.id), { rows: 60, distinct: 60 });
});

test('a revoked key is refused by ingest at once: the announcement crosses the cluster', async () => {
  const w = await signup(`rc-r-${stores.id.slice(-8)}`);
  const made = await call(control.url, 'POST', `/api/v1/workspaces/${w.id}/api-keys`, w.token, {
    name: 'to revoke',
    scopes: ['meter:write'],
  });
  assert.equal(made.status, 201, JSON.stringify(made.json));
  const { id: keyId, token } = made.json.api_key as { id: string; token: string };
  assert.equal((await call(ingest.url, 'POST', '/api/v1/meter', token, event(w.id, 'r-1'))).status, 202);
  const revoked = await call(control.url, 'DELETE', `/api/v1/workspaces/${w.id}/api-keys/${keyId}`, w.token);
  assert.ok(revoked.status < 300, JSON.stringify(revoked.json));
  const waited = await waitFor(
    'ingest to refuse the revoked key',
    async () => (await call(ingest.url, 'POST', '/api/v1/meter', token, event(w.id, 'r-2'))).status === 401,
    10_000,
  );
  assert.ok(waited < 5_000, `took ${waited} ms`);
});

test('dashboard sessions and the sign-in rate limit live on the cluster', async () => {
  const w = await signup(`rc-d-${stores.id.slice(-8)}`);
  const signin = await call(control.url, 'POST', '/dashboard/api/session', null, { api_key: w.token });
  assert.equal(signin.status, 201, JSON.stringify(signin.json));
  const cookie = signin.headers.get('set-cookie')!.split(';')[0]!;
  const me = await call(control.url, 'GET', '/dashboard/api/me', null, undefined, { cookie });
  assert.equal(me.status, 200);
  assert.equal(me.json.workspace.id, w.id);
  // Burst of 10 per address, refilled at 30 a minute: a quick run of sign-ins is refused soon.
  let status = 0;
  for (let i = 0; i < 30 && status !== 429; i++)
    status = (await call(control.url, 'POST', '/dashboard/api/session', null, { api_key: 'sks_wrong' })).status;
  assert.equal(status, 429);
  const out = await call(control.url, 'DELETE', '/dashboard/api/session', null, undefined, {
    cookie,
    'x-csrf-token': signin.json.csrf_token,
  });
  assert.equal(out.status, 204);
  assert.equal((await call(control.url, 'GET', '/dashboard/api/me', null, undefined, { cookie })).status, 401);
});

test('the aggregator runs on the cluster: its usage API authenticates through the cluster-backed key cache', async () => {
  const w = await signup(`rc-u-${stores.id.slice(-8)}`);
  const r = await call(aggregator.url, 'GET', `/api/v1/workspaces/${w.id}/usage`, w.token);
  assert.equal(r.status, 200, JSON.stringify(r.json));
});
