import { spawn, type ChildProcess } from 'node:child_process';
import { BenchError } from '../errors.js';
import { freePort } from '@meterd/core/net';
export { freePort };

/** A server the bench started, on a port of its own, stopped when the run ends. */
export interface Child {
  name: string;
  pid: number;
  url: string;
  /** SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * Starts `node [nodeArgs] script` with `env`, and resolves once GET `url + readyPath` answers 200.
 * If the process exits first, or is not ready in time, the error carries the tail of its stderr.
 */
export async function startChild(
  name: string,
  script: string,
  env: Record<string, string>,
  port: number,
  nodeArgs: string[] = [],
  readyPath = '/healthz',
): Promise<Child> {
  const url = `http://127.0.0.1:${port}`;
  const proc: ChildProcess = spawn(process.execPath, [...nodeArgs, script], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4_000);
  });
  let exited: number | null | undefined;
  const exit = new Promise<void>((resolve) =>
    proc.once('exit', (code) => {
      exited = code;
      resolve();
    }),
  );

  const deadline = Date.now() + 20_000;
  for (;;) {
    if (exited !== undefined) {
      throw new BenchError(
        'METERD_BENCH_CHILD_FAILED',
        `${name} exited with code ${exited} before it was ready:\n${stderr.trim()}`,
      );
    }
    try {
      const res = await fetch(url + readyPath, { signal: AbortSignal.timeout(1_000) });
      await res.arrayBuffer();
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new BenchError(
        'METERD_BENCH_CHILD_FAILED',
        `${name} was not ready at ${url}${readyPath} within 20 s:\n${stderr.trim()}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  return {
    name,
    pid: proc.pid!,
    url,
    async stop(graceMs = 15_000) {
      if (exited !== undefined) return;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      await exit;
      clearTimeout(timer);
    },
  };
}
