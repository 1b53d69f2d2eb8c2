import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Holds the lock of the shared cluster stacks (the Redis Cluster and the ClickHouse cluster of
 * infra/stack) for one test file. The files kill nodes of those clusters and stop what they started,
 * so two of them at once (npm test runs files in parallel) would kill each other's nodes. The lock
 * is flock(1) held by a child that exits when its stdin closes: it goes with this process, even on
 * a kill -9, so a dead test never leaves it taken. It is the machine's, not the checkout's, like the
 * clusters (MACHINE_STACK_DIR in infra/stack/lib.sh): a fresh CI clone's files wait for a working
 * tree's, and `ch-cluster.sh down-when-idle` waits for both. Returns the release.
 */
export async function lockClusterStacks(waitSeconds = 280): Promise<() => Promise<void>> {
  const dir = process.env.METERD_MACHINE_STACK_DIR ?? '/var/tmp/meterd-stack';
  mkdirSync(dir, { recursive: true });
  const child = spawn(
    'flock',
    ['-x', '-w', String(waitSeconds), join(dir, 'cluster-tests.lock'), '-c', 'echo locked; read _'],
    {
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  const [code] = await Promise.race([
    once(child.stdout, 'data').then(() => [null] as const),
    once(child, 'exit') as Promise<[number | null]>,
  ]);
  if (code !== null)
    throw new Error(`the cluster stacks' lock was not taken within ${waitSeconds} s (flock exit ${code})`);
  return async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.stdin.end();
    await exited;
  };
}
