import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { openTestStores, startPgBouncer, type TestPgBouncer, type TestStores } from '@meterd/core/testing';
import { createPool, inTransaction, type Pool } from '@meterd/core/store';
import { migratePostgres } from '@meterd/core/migrate';
import { PG_MIGRATIONS_DIR } from '@meterd/core/testing';

/**
 * Statement timeouts hold the same way direct and through PgBouncer in transaction mode, where a
 * startup parameter is refused and a session SET would leak into other clients' transactions.
 */
let stores: TestStores;
let bouncer: TestPgBouncer;
before(async () => {
  stores = await openTestStores('pgbouncer');
  bouncer = await startPgBouncer(6436);
});
after(async () => {
  await bouncer?.stop();
  await stores?.close();
});

const TIMEOUT_MS = 300;
const ways = (): Array<[string, URL]> => [
  ['direct', stores.databaseUrl],
  ['through PgBouncer (transaction mode)', bouncer.urlFor(stores.databaseUrl)],
];

/** The server's own view of running sleeps: proof a cut statement is gone, not only abandoned. */
async function sleepsRunning(): Promise<number> {
  const { rows } = await stores.pool.query<{ n: string }>(
    `SELECT count(*)::text AS n FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(%' AND state = 'active' AND pid <> pg_backend_pid()`,
  );
  return Number(rows[0]!.n);
}

test('a slow statement in a transaction is cut by the server (57014) and the pool stays usable', async () => {
  for (const [way, url] of ways()) {
    const pool: Pool = createPool(url, 2, { statementTimeoutMs: TIMEOUT_MS });
    try {
      const t0 = performance.now();
      await assert.rejects(
        inTransaction(pool, (c) => c.query('SELECT pg_sleep(5)')),
        (err: { code?: string }) => err.code === '57014',
        `${way}: canceling statement due to statement timeout`,
      );
      const ms = performance.now() - t0;
      assert.ok(ms < 1_500, `${way}: cut after ${Math.round(ms)} ms, not after the sleep`);
      assert.equal(await sleepsRunning(), 0, `${way}: nothing left running on the server`);
      // The limit is the transaction's alone: the connection it ran on carries no leftover setting.
      for (let i = 0; i < 4; i++) {
        const { rows } = await pool.query<{ statement_timeout: string }>('SHOW statement_timeout');
        assert.equal(rows[0]!.statement_timeout, '0', `${way}: no session setting leaked`);
      }
      assert.deepEqual((await inTransaction(pool, (c) => c.query('SELECT 1 AS one'))).rows, [{ one: 1 }]);
    } finally {
      await pool.end();
    }
  }
});

test('a slow single statement is given up by the client; its connection is discarded and the pool goes on', async () => {
  for (const [way, url] of ways()) {
    const pool = createPool(url, 1, { statementTimeoutMs: TIMEOUT_MS });
    try {
      const t0 = performance.now();
      await assert.rejects(pool.query('SELECT pg_sleep(4)'), /timeout/i, way);
      assert.ok(performance.now() - t0 < 3_500, `${way}: the client stopped waiting`);
      // The only connection was the one left mid-statement: the pool must have replaced it.
      assert.deepEqual((await pool.query('SELECT 2 AS two')).rows, [{ two: 2 }], way);
    } finally {
      await pool.end();
    }
  }
});

test('PgBouncer refuses statement_timeout as a startup parameter: why meterd sets it per transaction', async () => {
  const c = new pg.Client({ connectionString: bouncer.urlFor(stores.databaseUrl).toString(), statement_timeout: 1000 });
  c.on('error', () => {});
  await assert.rejects(c.connect(), /unsupported startup parameter/);
  await c.end().catch(() => {});
});

test('migrations run on the session URL while the services use PgBouncer', async () => {
  const session = createPool(stores.databaseUrl, 1, { statementTimeoutMs: 0 });
  const pooled = createPool(bouncer.urlFor(stores.databaseUrl), 2);
  try {
    assert.deepEqual(await migratePostgres(session, PG_MIGRATIONS_DIR), []);
    const { rows } = await pooled.query<{ n: string }>('SELECT count(*)::text AS n FROM schema_migrations');
    assert.ok(Number(rows[0]!.n) >= 8);
  } finally {
    await session.end();
    await pooled.end();
  }
});
