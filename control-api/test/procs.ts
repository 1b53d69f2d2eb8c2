import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freePort } from '@meterd/core/net';
export { freePort };

export const REPO = fileURLToPath(new URL('../../../', import.meta.url));

/** Spawns a built entry point and waits until its /healthz answers. */
export async function spawnService(
  main: string,
  env: Record<string, string>,
  healthUrl: string,
  timeoutMs = 20_000,
): Promise<ChildProcess> {
  const child = spawn(process.execPath, [main], {
    cwd: REPO,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'ignore', process.env.TEST_CHILD_STDERR ? 'inherit' : 'ignore'],
  });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${main} exited with ${child.exitCode}`);
    try {
      if ((await fetch(healthUrl)).ok) return child;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${main} not healthy within ${timeoutMs} ms`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise((r) => child.once('exit', () => r()));
}
