import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
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

/** stripe-local on a free port (or `port`), healthy: the Stripe double the control API's tests call. */
export async function spawnStripeLocal(
  env: Record<string, string> = {},
  port?: number,
): Promise<{ child: ChildProcess; url: string }> {
  const p = port ?? (await freePort());
  const url = `http://127.0.0.1:${p}`;
  const child = await spawnService(
    join(REPO, 'stripe-local/dist/src/main.js'),
    { STRIPE_LOCAL_PORT: String(p), LOG_LEVEL: 'warn', ...env },
    `${url}/healthz`,
  );
  return { child, url };
}

export function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise((r) => child.once('exit', () => r()));
}
