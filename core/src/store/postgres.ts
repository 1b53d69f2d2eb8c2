import pg from 'pg';

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;

/** Default of DATABASE_STATEMENT_TIMEOUT_MS: no request or worker statement of meterd needs longer. */
export const DEFAULT_STATEMENT_TIMEOUT_MS = 30_000;

/**
 * How long the client waits past the server-side limit before it gives up on its own: the server's
 * cut (SET LOCAL, or the role's statement_timeout) answers first whenever the server is reachable;
 * this catches a server or PgBouncer that stopped answering at all.
 */
const CLIENT_GRACE_MS = 2_000;

export interface PoolOptions {
  /**
   * Longest a statement may run, in ms; 0 turns the limit off (migrations). Enforced the same way
   * direct and through PgBouncer in transaction mode, where a startup parameter (`options=-c
   * statement_timeout`, pg's `statement_timeout`) is refused and a session `SET` would leak into
   * other clients' transactions: inTransaction sends `SET LOCAL statement_timeout` with its BEGIN
   * (one round trip), and every query has a client-side timeout a little above it, after which the
   * pool discards the connection (docs/operations.md, "Postgres behind PgBouncer").
   */
  statementTimeoutMs?: number;
}

/** The server-side limit each pool's transactions set, read by inTransaction. */
const statementTimeouts = new WeakMap<pg.Pool, number>();

export function createPool(url: URL, max = 10, opts: PoolOptions = {}): pg.Pool {
  const timeoutMs = opts.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS;
  const pool = new pg.Pool({
    connectionString: url.toString(),
    max,
    connectionTimeoutMillis: 5_000,
    // A connection through a NAT or a load balancer that silently dropped it is found by the
    // kernel instead of hanging the next query.
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    ...(timeoutMs > 0 ? { query_timeout: timeoutMs + CLIENT_GRACE_MS } : {}),
  });
  if (timeoutMs > 0) statementTimeouts.set(pool, timeoutMs);
  // An idle client losing its connection (Postgres restart) must not crash the process: the pool
  // drops it and the next query opens a new one. The error still reaches whoever handles 'error'.
  pool.on('error', () => {});
  return pool;
}

/** The URL for session-bound work (advisory locks, LISTEN, migrations): DATABASE_SESSION_URL, else DATABASE_URL. */
export function sessionUrl(cfg: { DATABASE_URL: URL; DATABASE_SESSION_URL: URL | null }): URL {
  return cfg.DATABASE_SESSION_URL ?? cfg.DATABASE_URL;
}

export async function pgHealthy(pool: pg.Pool): Promise<boolean> {
  try {
    await pool.query('SELECT 1');
    return true;
  } catch {
    return false;
  }
}

/**
 * Runs `fn` in one transaction: COMMIT on success, ROLLBACK and rethrow on any error. The pool's
 * statement timeout is set for the transaction alone (SET LOCAL), in the same round trip as BEGIN.
 * A connection whose ROLLBACK fails (a client-side timeout left a statement running, the server
 * went away) is discarded, never handed to the next caller mid-statement.
 */
export async function inTransaction<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  const c = await pool.connect();
  const timeoutMs = statementTimeouts.get(pool);
  let broken: Error | undefined;
  try {
    await c.query(timeoutMs === undefined ? 'BEGIN' : `BEGIN; SET LOCAL statement_timeout = ${timeoutMs}`);
    const out = await fn(c);
    await c.query('COMMIT');
    return out;
  } catch (err) {
    await c.query('ROLLBACK').catch((e: Error) => {
      broken = e;
    });
    throw err;
  } finally {
    c.release(broken);
  }
}
