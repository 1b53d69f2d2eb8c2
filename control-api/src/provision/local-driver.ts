import { spawn, type ChildProcess } from 'node:child_process';
import { MeterdError } from '@meterd/core/errors';
import { type Logger } from '@meterd/core/log';
import type { DeploySpec, ProvisionDriver } from './driver.js';
import { freePort } from '@meterd/core/net';

/**
 * Runs a catalog service as a child process of the control API (so `npm start` provisions for
 * real on one machine). Children die with the control API; provisions still `pending` are
 * redeployed at the next start. Development only (PROVISION_LOCAL_ENABLED, refused unless
 * NODE_ENV=development): the child runs as the control API's user, so tenants share the host.
 */
export class LocalDriver implements ProvisionDriver {
  readonly name = 'local' as const;
  private readonly children = new Map<string, ChildProcess>();

  constructor(
    private readonly log: Logger,
    private readonly readyTimeoutMs = 15_000,
  ) {}

  /** Local services answer on a loopback port, not on a host of their own. */
  hostOf(): null {
    return null;
  }

  async deploy(spec: DeploySpec): Promise<{ url: string }> {
    await this.destroy(spec);
    const port = await freePort();
    // A minimal environment built from scratch: nothing of the control API's own (its Stripe key,
    // database URL) is inherited, and spec.config holds only keys the catalog entry declares.
    const child = spawn(process.execPath, [spec.service.localEntry], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...spec.config, PORT: String(port), HOST: '127.0.0.1' },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    this.children.set(spec.provisionId, child);
    child.on('exit', (code, signal) => {
      if (this.children.get(spec.provisionId) === child) this.children.delete(spec.provisionId);
      this.log.info({ provision: spec.provisionId, code, signal }, 'local provisioned process exited');
    });
    const url = `http://127.0.0.1:${port}`;
    await waitHealthy(url, child, this.readyTimeoutMs);
    return { url };
  }

  async destroy(spec: DeploySpec): Promise<void> {
    const child = this.children.get(spec.provisionId);
    if (child === undefined) return;
    this.children.delete(spec.provisionId);
    await stopChild(child);
  }

  async close(): Promise<void> {
    await Promise.all([...this.children.values()].map(stopChild));
    this.children.clear();
  }
}

async function waitHealthy(url: string, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new MeterdError(
        'METERD_PROVISION_EXITED',
        `the service exited during start-up (${child.exitCode ?? child.signalCode})`,
      );
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGKILL');
  throw new MeterdError('METERD_PROVISION_TIMEOUT', `the service was not healthy within ${timeoutMs} ms`);
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    child.kill('SIGTERM');
  });
}
