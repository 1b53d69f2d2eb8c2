import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from './paths.js';

const run = promisify(execFile);
const SCRIPT = join(REPO_ROOT, 'infra/stack/pgbouncer.sh');

/** A PgBouncer in transaction mode that one test file started (infra/stack/pgbouncer.sh), on its own port. */
export interface TestPgBouncer {
  port: number;
  /** The same database and user as `direct`, through this PgBouncer. */
  urlFor(direct: URL): URL;
  /** DATABASE_URL through PgBouncer and DATABASE_SESSION_URL direct, for a service's env. */
  envFor(direct: URL): { DATABASE_URL: string; DATABASE_SESSION_URL: string };
  stop(): Promise<void>;
}

/**
 * Starts PgBouncer on `port` (one of 6432–6439; each test file uses its own, so files running side
 * by side never stop each other's) in front of the stack's Postgres. `poolSize`: server connections
 * per database and user (1 makes every client share one server session, as a busy pooler may).
 */
export async function startPgBouncer(port: number, o: { poolSize?: number } = {}): Promise<TestPgBouncer> {
  const env = {
    ...process.env,
    PGBOUNCER_PORT: String(port),
    ...(o.poolSize === undefined ? {} : { PGBOUNCER_POOL_SIZE: String(o.poolSize) }),
  };
  await run('bash', [SCRIPT, 'up'], { env, timeout: 300_000 });
  const urlFor = (direct: URL): URL => {
    const u = new URL(direct.toString());
    u.hostname = '127.0.0.1';
    u.port = String(port);
    return u;
  };
  return {
    port,
    urlFor,
    envFor: (direct) => ({ DATABASE_URL: urlFor(direct).toString(), DATABASE_SESSION_URL: direct.toString() }),
    async stop() {
      await run('bash', [SCRIPT, 'down'], { env, timeout: 60_000 });
    },
  };
}
