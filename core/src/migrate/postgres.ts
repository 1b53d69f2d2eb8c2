import type pg from 'pg';
import { applyPending, readMigrations } from './files.js';

/**
 * Applies each Postgres migration once, in order, each in its own transaction together with its
 * record in schema_migrations. An advisory lock lets several processes start at once safely. The
 * lock is a session lock, so `pool` must reach Postgres directly or through session pooling
 * (DATABASE_SESSION_URL), never PgBouncer's transaction mode, where the unlock could run on another
 * server connection. Migrations may rebuild indexes: no statement timeout applies (a role's
 * statement_timeout is turned off for this session).
 */
export async function migratePostgres(pool: pg.Pool, dir: string): Promise<string[]> {
  const migrations = await readMigrations(dir);
  const c = await pool.connect();
  try {
    await c.query('SET statement_timeout = 0');
    await c.query(`SELECT pg_advisory_lock(hashtext('meterd:migrations'))`);
    await c.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      name text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    const { rows } = await c.query<{ name: string; checksum: string }>('SELECT name, checksum FROM schema_migrations');
    const done = new Map(rows.map((r) => [r.name, r.checksum]));
    return await applyPending('postgres', migrations, done, async (m) => {
      try {
        await c.query('BEGIN');
        await c.query(m.sql);
        await c.query('INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)', [m.name, m.checksum]);
        await c.query('COMMIT');
      } catch (err) {
        // The migration's own error is the one to report; a failed ROLLBACK ends with the connection.
        await c.query('ROLLBACK').catch(() => {});
        throw err;
      }
    });
  } finally {
    await c.query(`SELECT pg_advisory_unlock(hashtext('meterd:migrations'))`).catch(() => {});
    c.release();
  }
}
