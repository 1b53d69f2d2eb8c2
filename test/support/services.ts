import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freePort } from '@meterd/core/net';
export { freePort };

/** The repository root (this file compiles to test/dist/support/services.js). */
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** One built service (`<pkg>/dist/src/main.js`) running as its own process, like `npm start` runs it. */
export interface Service {
  name: string;
  url: string;
  proc: ChildProcess;
  /** SIGTERM, then the exit code, or the name of the signal that ended it. */
  stop(): Promise<number | string | null>;
  /** The last 8 KB it wrote to stdout and stderr. */
  output(): string;
}

/**
 * Starts `node <pkg>/dist/src/<entry>.js` (main.js unless told: the front router is control-api's
 * front.js) with `env` over the current environment and waits until its GET /healthz answers 200.
 * Its output is kept (last 8 KB) and shown if it dies before that.
 */
export async function startService(
  name: string,
  pkg: string,
  port: number,
  env: Record<string, string>,
  timeoutMs = 20_000,
  entry = 'main',
): Promise<Service> {
  const proc = spawn(process.execPath, [`${ROOT}${pkg}/dist/src/${entry}.js`], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let tail = '';
  const keep = (chunk: Buffer): void => {
    tail = (tail + chunk.toString('utf8')).slice(-8_192);
  };
  proc.stdout!.on('data', keep);
  proc.stderr!.on('data', keep);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null)
      throw new Error(`${name} exited (${proc.exitCode ?? proc.signalCode}) before it was healthy:\n${tail}`);
    const ok = await fetch(`${url}/healthz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`${name} was not healthy within ${timeoutMs} ms:\n${tail}`);
    }
    await sleep(50);
  }
  return {
    name,
    url,
    proc,
    output: () => tail,
    stop() {
      return new Promise((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve(proc.exitCode ?? proc.signalCode);
        proc.once('exit', (code, signal) => resolve(code ?? signal));
        proc.kill('SIGTERM');
      });
    },
  };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every 100 ms until it returns true; fails with `what` after `ms`. Returns the time waited. */
export async function waitFor(what: string, check: () => Promise<boolean>, ms = 30_000): Promise<number> {
  const t0 = Date.now();
  while (!(await check())) {
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(100);
  }
  return Date.now() - t0;
}

/** The variable each service reads its port from. */
const PORT_VARS = {
  ingest: 'INGEST_PORT',
  aggregator: 'AGGREGATOR_PORT',
  'control-api': 'CONTROL_API_PORT',
  'billing-sync': 'BILLING_SYNC_PORT',
  'stripe-local': 'STRIPE_LOCAL_PORT',
} as const;

/** What the end-to-end tests run every service with unless they say otherwise. */
const DEFAULTS: Record<keyof typeof PORT_VARS, Record<string, string>> = {
  ingest: { INGEST_THREADS: '1' },
  aggregator: {},
  // The webhook worker only when a test asks for it: it polls the database the whole test long.
  'control-api': { NODE_ENV: 'development', WEBHOOK_WORKER: 'false' },
  'billing-sync': {},
  'stripe-local': {},
};

/**
 * Starts a service of the pipeline on a free port with the test's stores (stripe-local needs none),
 * warn-level logs and the defaults above, `extra` winning over all of them.
 */
export async function startOn(
  name: keyof typeof PORT_VARS,
  storesEnv: Record<string, string>,
  extra: Record<string, string> = {},
): Promise<Service> {
  const port = await freePort();
  return startService(name, name, port, {
    ...(name === 'stripe-local' ? {} : storesEnv),
    [PORT_VARS[name]]: String(port),
    LOG_LEVEL: 'warn',
    ...DEFAULTS[name],
    ...extra,
  });
}
