import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { Aggregator } from '../src/worker/aggregator.js';
import { PgAdvisoryLeases, type ShardLeases } from '../src/worker/leases.js';
import { COPY_HORIZON_S, insertEvents, rollupSnapshot, type Ev } from './helpers.js';

/**
 * A former lease holder never overwrites its successor: versions come from one Postgres sequence
 * (so they order replicas, not wall clocks), and the lease is checked again right before the
 * rollups are written.
 */
let stores: TestStores;
before(async () => {
  stores = await openTestStores('agglease');
});
after(async () => {
  await stores.close();
});

const SHARDS = 2;
const opts = { shards: SHARDS, closeAfterSeconds: 600, windowsPerQuery: 10, copyHorizonSeconds: COPY_HORIZON_S };

test('rollup versions come from one sequence shared by every replica, above the old wall-clock versions', async () => {
  const a = new PgAdvisoryLeases(stores.databaseUrl, SHARDS);
  const b = new PgAdvisoryLeases(stores.databaseUrl, SHARDS);
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

test('a process that loses its leases between refresh and write writes nothing; its successor does', async () => {
  const successor = new PgAdvisoryLeases(stores.databaseUrl, SHARDS);
  const inner = new PgAdvisoryLeases(stores.databaseUrl, SHARDS);
  let stealAfterRefresh = false;
  // The real leases, with the connection killed (as a network partition or a Postgres restart
  // would) and the shards taken by another replica right after refresh() said they were held.
  const losing: ShardLeases = {
    async refresh() {
      const held = new Set(await inner.refresh());
      if (stealAfterRefresh) {
        await stores.pool.query(
          `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND classid::bigint = 1095190354 AND pid <> pg_backend_pid()`,
        );
        assert.equal((await successor.refresh()).size, SHARDS, 'the successor takes every shard');
      }
      return held;
    },
    verify: () => inner.verify(),
    nextVersion: () => inner.nextVersion(),
    close: () => inner.close(),
  };
  const old = new Aggregator(stores.clickhouse, losing, opts);
  const next = new Aggregator(stores.clickhouse, successor, opts);
  try {
    assert.equal((await old.runOnce()).shards, SHARDS);
    const at = Date.UTC(2024, 5, 3, 10, 15);
    const ev: Ev = {
      workspace_id: 'ws_lease1',
      event_type: 'checkout.completed',
      idempotency_key: 'o1',
      event_id: 'evt_l1',
      quantity: 1,
      gmv_cents: 700,
      currency: 'USD',
      occurred_ms: at,
      received_ms: at,
    };
    await insertEvents(stores.clickhouse, [ev]);
    stealAfterRefresh = true;
    const r = await old.runOnce();
    assert.deepEqual(r, { shards: 0, windows: 0, closed: 0 }, 'the former holder wrote no rollup');
    assert.equal((await rollupSnapshot(stores.clickhouse)).hour.size, 0);
    stealAfterRefresh = false;
    // The successor holds the shards; a fresh Aggregator on them rolls the event up.
    const done = await next.runOnce();
    assert.equal(done.shards, SHARDS);
    const hour = [...(await rollupSnapshot(stores.clickhouse)).hour.values()];
    assert.deepEqual(
      hour.map((h) => h.gmv_cents),
      ['700'],
    );
  } finally {
    await old.stop();
    await next.stop();
  }
});
