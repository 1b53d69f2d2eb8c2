import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { Aggregator } from '../src/worker/aggregator.js';
import { readShardStates } from '../src/worker/state.js';
import { fairShare, PgTableLeases, type ShardLeases } from '../src/worker/leases.js';
import { COPY_HORIZON_S, insertEvents, rollupSnapshot, sleep, type Ev } from './helpers.js';

/**
 * Shard leases are rows in Postgres: the live replicas split the shards evenly, rebalance when one
 * joins or leaves, and a former holder never overwrites its successor (versions come from one
 * sequence and are drawn before the lease is checked again, right before the write).
 */
let stores: TestStores;
before(async () => {
  stores = await openTestStores('agglease');
});
after(async () => {
  await stores.close();
});

const TTL_MS = 1_000;
const leases = (shards: number, replicaId?: string): PgTableLeases =>
  new PgTableLeases(stores.pool, { shards, ttlMs: TTL_MS, ...(replicaId === undefined ? {} : { replicaId }) });

/** Refreshes every replica until `done` holds for the shard sets they report, or fails after 10 s. */
async function settle(
  replicas: readonly ShardLeases[],
  done: (held: ReadonlySet<number>[]) => boolean,
  what: string,
): Promise<ReadonlySet<number>[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const held: ReadonlySet<number>[] = [];
    for (const r of replicas) held.push(await r.refresh());
    if (done(held)) return held;
    if (Date.now() > deadline) throw new Error(`${what}: still ${held.map((h) => [...h].join(',')).join(' | ')}`);
    await sleep(50);
  }
}

const sizes = (held: ReadonlySet<number>[]): number[] => held.map((h) => h.size).sort((a, b) => b - a);
const disjointCover = (held: ReadonlySet<number>[], shards: number): boolean => {
  const all = held.flatMap((h) => [...h]);
  return all.length === shards && new Set(all).size === shards;
};

test('fairShare splits the shards as evenly as they go, the larger shares to the lowest ranks', () => {
  assert.deepEqual(
    [0, 1, 2].map((r) => fairShare(8, 3, r)),
    [3, 3, 2],
  );
  assert.deepEqual(
    [0, 1].map((r) => fairShare(16, 2, r)),
    [8, 8],
  );
  assert.deepEqual(
    [0, 1, 2].map((r) => fairShare(2, 3, r)),
    [1, 1, 0],
  );
  assert.equal(fairShare(4, 0, 0), 4);
});

test('rollup versions come from one sequence shared by every replica, above the old wall-clock versions', async () => {
  const a = leases(2);
  const b = leases(2);
  try {
    const v1 = await a.nextVersion();
    const v2 = await b.nextVersion();
    const v3 = await a.nextVersion();
    assert.ok(v1 >= 10_000_000_000_000_000n, 'above every microsecond wall-clock version');
    assert.ok(v1 < v2 && v2 < v3, 'strictly increasing across processes');
  } finally {
    await a.close();
    await b.close();
  }
});

test('live replicas split the shards evenly; one joining takes its share, one leaving or dying gives its shards up', async () => {
  const SHARDS = 8;
  const a = leases(SHARDS, 'r-a');
  const b = leases(SHARDS, 'r-b');
  const c = leases(SHARDS, 'r-c');
  try {
    await settle([a], (h) => h[0]!.size === SHARDS, 'one replica takes every shard');
    let held = await settle(
      [a, b],
      (h) => disjointCover(h, SHARDS) && sizes(h).join() === '4,4',
      'a second replica joins: 4 + 4',
    );
    held = await settle(
      [a, b, c],
      (h) => disjointCover(h, SHARDS) && sizes(h).join() === '3,3,2',
      'a third replica joins: 3 + 3 + 2',
    );
    assert.ok(held.every((h) => h.size > 0));
    // c leaves cleanly: its shards are free at once.
    await c.close();
    await settle([a, b], (h) => disjointCover(h, SHARDS) && sizes(h).join() === '4,4', 'c left: 4 + 4');
    // b stops renewing (a kill -9): its heartbeat and leases expire, a takes everything.
    const before = await stores.pool.query<{ shard: number; epoch: string }>(
      `SELECT shard, epoch::text FROM aggregator_shard_leases WHERE owner = 'r-b'`,
    );
    assert.equal(before.rows.length, 4);
    await settle([a], (h) => h[0]!.size === SHARDS, 'b died: a holds every shard after the TTL');
    const after = await stores.pool.query<{ shard: number; epoch: string }>(
      `SELECT shard, epoch::text FROM aggregator_shard_leases WHERE shard = ANY($1::int[])`,
      [before.rows.map((r) => r.shard)],
    );
    for (const r of after.rows) {
      const old = before.rows.find((x) => x.shard === r.shard)!;
      assert.ok(BigInt(r.epoch) > BigInt(old.epoch), `shard ${r.shard}: a new epoch with the new owner`);
    }
    // The dead replica finds out when it checks before writing: nothing is still its own.
    assert.equal((await b.verify()).size, 0);
  } finally {
    await Promise.all([a.close(), b.close(), c.close()]);
  }
});

test("a holder paused past its lease writes late, and its successor's rollups and progress still win", async () => {
  const SHARDS = 2;
  const opts = { shards: SHARDS, closeAfterSeconds: 600, windowsPerQuery: 10, copyHorizonSeconds: COPY_HORIZON_S };
  const inner = leases(SHARDS, 'r-old');
  const successor = leases(SHARDS, 'r-new');
  let pause: { reached: () => void; resume: Promise<void> } | null = null;
  // The real leases; when armed, the old holder stops right after its check succeeded, like a
  // process frozen by a long GC pause or a stopped VM, and carries on writing when released.
  const paused: ShardLeases = {
    refresh: () => inner.refresh(),
    async verify() {
      const still = await inner.verify();
      if (pause !== null) {
        pause.reached();
        await pause.resume;
      }
      return still;
    },
    nextVersion: () => inner.nextVersion(),
    close: () => inner.close(),
  };
  const old = new Aggregator(stores.clickhouse, paused, opts);
  const next = new Aggregator(stores.clickhouse, successor, opts);
  const at = Date.UTC(2024, 5, 3, 10, 15);
  const ev = (key: string, gmv: number): Ev => ({
    workspace_id: 'ws_lease1',
    event_type: 'checkout.completed',
    idempotency_key: key,
    event_id: `evt_${key}`,
    quantity: 1,
    gmv_cents: gmv,
    currency: 'USD',
    occurred_ms: at,
    received_ms: at,
  });
  try {
    assert.equal((await old.runOnce()).shards, SHARDS);
    await insertEvents(stores.clickhouse, [ev('o1', 700)]);
    let resume!: () => void;
    let reached!: () => void;
    const atPause = new Promise<void>((r) => (reached = r));
    pause = { reached, resume: new Promise<void>((r) => (resume = r)) };
    const late = old.runOnce();
    await atPause;
    // While the old holder is frozen, its leases expire; the successor takes the shards, sees a
    // second event too, and writes its rollups and progress.
    await settle([successor], (h) => h[0]!.size === SHARDS, 'the successor takes both shards after the TTL');
    await insertEvents(stores.clickhouse, [ev('o2', 300)]);
    const done = await next.runOnce();
    assert.equal(done.shards, SHARDS);
    const newState = await readShardStates(stores.clickhouse);
    // The old holder wakes up and writes its older snapshot (700 only) and older progress.
    resume();
    await late;
    const hour = [...(await rollupSnapshot(stores.clickhouse)).hour.values()];
    assert.deepEqual(
      hour.map((h) => h.gmv_cents),
      ['1000'],
      "the successor's total stands",
    );
    assert.deepEqual(await readShardStates(stores.clickhouse), newState, "the successor's progress stands");
  } finally {
    await old.stop();
    await next.stop();
  }
});
