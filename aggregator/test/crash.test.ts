import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { openTestStores, startPgBouncer, type TestPgBouncer, type TestStores } from '@meterd/core/testing';
import { overallAsOf } from '../src/rollups/freshness.js';
import { reconcile } from '../src/reconcile/compare.js';
import { spawnAggregator, killHard, stopGracefully, type Child } from './child.js';
import {
  COPY_HORIZON_S,
  insertEvents,
  randomStream,
  referenceSnapshot,
  rng,
  rollupSnapshot,
  sleep,
  snapshotToObject,
  type Ev,
} from './helpers.js';

const SHARDS = 8;
const CLOSE_AFTER = 600;
let stores: TestStores;
let bouncer: TestPgBouncer;
before(async () => {
  stores = await openTestStores('aggcrash');
  bouncer = await startPgBouncer(6433);
});
after(async () => {
  await bouncer?.stop();
  await stores?.close();
});

/** Every aggregator here reaches Postgres through PgBouncer in transaction mode. */
const envFor = (): Record<string, string> => ({
  ...stores.env,
  ...bouncer.envFor(stores.databaseUrl),
  // A killed replica's shards move after this long.
  AGGREGATOR_LEASE_TTL_MS: '1500',
  AGGREGATOR_SHARDS: String(SHARDS),
  AGGREGATOR_POLL_MS: '50',
  AGGREGATOR_CLOSE_AFTER_SECONDS: String(CLOSE_AFTER),
  AGGREGATOR_COPY_HORIZON_SECONDS: String(COPY_HORIZON_S),
});

/** Feeds the batches (replays included) at a steady pace; returns when all are inserted. */
async function feed(batches: Ev[][], pauseMs: number): Promise<number> {
  for (const b of batches) {
    await insertEvents(stores.clickhouse, b);
    await sleep(pauseMs);
  }
  return Date.now();
}

async function waitUntilCaughtUp(since: number): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const asOf = await overallAsOf(stores.clickhouse, SHARDS);
    if (asOf !== null && asOf > since) return;
    if (Date.now() > deadline) throw new Error(`rollups not caught up (as of ${asOf}, need > ${since})`);
    await sleep(50);
  }
}

async function assertExact(distinct: Ev[], workspaces: string[]): Promise<void> {
  const want = referenceSnapshot(distinct, CLOSE_AFTER);
  const got = await rollupSnapshot(stores.clickhouse);
  for (const g of ['hour', 'day', 'month'] as const) {
    for (const k of [...got[g].keys()]) if (!workspaces.some((w) => k.startsWith(`${w} `))) got[g].delete(k);
  }
  assert.deepEqual(snapshotToObject(got), snapshotToObject(want));
  for (const ws of workspaces) {
    assert.deepEqual(
      await reconcile(stores.clickhouse, {
        workspaceId: ws,
        from: Date.UTC(2024, 0, 1),
        to: Date.UTC(2024, 2, 1),
        closeAfterSeconds: CLOSE_AFTER,
        copyHorizonSeconds: COPY_HORIZON_S,
      }),
      [],
    );
  }
}

test('kill -9 of the aggregator at random moments while events flow: after a restart nothing is lost or double-counted', async () => {
  const rand = rng(77);
  const workspaces = ['ws_crasha', 'ws_crashb', 'ws_crashc', 'ws_crashd'];
  const { batches, distinct } = randomStream(rand, {
    workspaces,
    distinct: 1500,
    base: Date.UTC(2024, 0, 30),
    spanMs: 3 * 86_400_000,
    closeAfterSeconds: CLOSE_AFTER,
  });
  let child: Child = spawnAggregator(envFor());
  let kills = 0;
  let feeding = true;
  const fed = feed(batches, 15).finally(() => {
    feeding = false;
  });
  while (feeding) {
    await sleep(100 + rand() * 600);
    await killHard(child);
    kills++;
    if (rand() < 0.5) await sleep(rand() * 300);
    child = spawnAggregator(envFor());
  }
  const lastInsert = await fed;
  try {
    await waitUntilCaughtUp(lastInsert);
    assert.ok(kills >= 3, `only ${kills} kills happened`);
    await assertExact(distinct, workspaces);
  } finally {
    assert.equal(await stopGracefully(child), 0, 'SIGTERM stops the aggregator cleanly');
  }
});

async function shardsHeld(port: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return Number(/^aggregator_shards_held (\S+)$/m.exec(text)?.[1]);
}

/** Waits until the replicas on `ports` report holding exactly `want` shards (in that order, any order of ports). */
async function waitForSplit(ports: number[], want: number[]): Promise<void> {
  const deadline = Date.now() + 20_000;
  const expected = [...want].sort().join();
  for (;;) {
    const held = await Promise.all(ports.map(shardsHeld));
    if ([...held].sort().join() === expected) return;
    if (Date.now() > deadline) throw new Error(`shards held ${held.join(' + ')}, want ${want.join(' + ')}`);
    await sleep(50);
  }
}

test('two aggregators at once split the shards evenly and the rollups stay exact', async () => {
  const rand = rng(78);
  const workspaces = ['ws_twoa', 'ws_twob', 'ws_twoc', 'ws_twod', 'ws_twoe', 'ws_twof'];
  const { batches, distinct } = randomStream(rand, {
    workspaces,
    distinct: 1000,
    base: Date.UTC(2024, 0, 30),
    spanMs: 3 * 86_400_000,
    closeAfterSeconds: CLOSE_AFTER,
  });
  const a = spawnAggregator(envFor());
  const b = spawnAggregator(envFor());
  try {
    const ports = await Promise.all([a.port, b.port]);
    await waitForSplit(ports, [SHARDS / 2, SHARDS / 2]);
    const lastInsert = await feed(batches, 10);
    await waitUntilCaughtUp(lastInsert);
    await assertExact(distinct, workspaces);
  } finally {
    await Promise.all([stopGracefully(a), stopGracefully(b)]);
  }
});

test('three aggregators split 3 + 3 + 2; one killed -9 under load: its shards move to the others and the rollups stay exact', async () => {
  const rand = rng(79);
  const workspaces = ['ws_threea', 'ws_threeb', 'ws_threec', 'ws_threed', 'ws_threee', 'ws_threef'];
  const { batches, distinct } = randomStream(rand, {
    workspaces,
    distinct: 1000,
    base: Date.UTC(2024, 0, 30),
    spanMs: 3 * 86_400_000,
    closeAfterSeconds: CLOSE_AFTER,
  });
  const replicas = [spawnAggregator(envFor()), spawnAggregator(envFor()), spawnAggregator(envFor())];
  try {
    const ports = await Promise.all(replicas.map((r) => r.port));
    await waitForSplit(ports, [3, 3, 2]);
    const half = Math.floor(batches.length / 2);
    await feed(batches.slice(0, half), 10);
    await killHard(replicas[0]!);
    const lastInsert = await feed(batches.slice(half), 10);
    await waitForSplit(ports.slice(1), [SHARDS / 2, SHARDS / 2]);
    await waitUntilCaughtUp(lastInsert);
    await assertExact(distinct, workspaces);
  } finally {
    await killHard(replicas[0]!);
    await Promise.all(replicas.slice(1).map(stopGracefully));
  }
});
