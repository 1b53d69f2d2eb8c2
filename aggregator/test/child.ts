import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The built service entry point, run as its own process like `npm start` does. */
export const MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

export interface Child {
  proc: ChildProcess;
  port: Promise<number>;
}

/** Spawns the aggregator; `port` resolves from its "aggregator listening" log line. */
export function spawnAggregator(env: Record<string, string>): Child {
  const proc = spawn(process.execPath, [MAIN], {
    env: { ...process.env, LOG_LEVEL: 'info', AGGREGATOR_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const port = new Promise<number>((resolve, reject) => {
    let buf = '';
    proc.stdout!.setEncoding('utf8');
    proc.stdout!.on('data', (chunk: string) => {
      buf += chunk;
      const m = /"url":"http:\/\/[^:]+:(\d+)"[^\n]*aggregator listening/.exec(buf);
      if (m) resolve(Number(m[1]));
    });
    proc.stderr!.resume();
    proc.once('exit', (code, sig) => reject(new Error(`aggregator exited (${sig ?? code}) before listening`)));
  });
  port.catch(() => {});
  return { proc, port };
}

export function killHard(c: Child): Promise<void> {
  return new Promise((resolve) => {
    if (c.proc.exitCode !== null || c.proc.signalCode !== null) return resolve();
    c.proc.once('exit', () => resolve());
    c.proc.kill('SIGKILL');
  });
}

export function stopGracefully(c: Child): Promise<number | null> {
  return new Promise((resolve) => {
    if (c.proc.exitCode !== null || c.proc.signalCode !== null) return resolve(c.proc.exitCode);
    c.proc.once('exit', (code) => resolve(code));
    c.proc.kill('SIGTERM');
  });
}
