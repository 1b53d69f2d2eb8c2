import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { openTestStores, type TestStores } from '@meterd/core/testing';
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
before(async () => {
  stores = await openTestStores('aggcrash');
});
after(async () => {
  await stores.close();
});

const envFor = (): Record<string, string> => ({
  ...stores.env,
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

test('two aggregators at once share the shards and the rollups stay exact', async () => {
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
    const lastInsert = await feed(batches, 10);
    await waitUntilCaughtUp(lastInsert);
    await assertExact(distinct, workspaces);
    const held = await Promise.all(
      ports.map(async (p) => {
        const text = await (await fetch(`http://127.0.0.1:${p}/metrics`)).text();
        return Number(/^aggregator_shards_held (\S+)$/m.exec(text)?.[1]);
      }),
    );
    assert.equal(held[0]! + held[1]!, SHARDS, `every shard is held by exactly one aggregator (${held.join(' + ')})`);
  } finally {
    await Promise.all([stopGracefully(a), stopGracefully(b)]);
  }
});
