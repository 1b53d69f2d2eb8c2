import { spawn } from 'node:child_process';

export interface ExitReport {
  code: number | null;
  /** What kept the child's event loop alive after close, when it did not exit by itself. */
  leftover: string[] | undefined;
  stderr: string;
}

/**
 * Runs `source` (an ES module that starts a service in-process, uses it, and closes it) in a child
 * node process, and reports whether the child then exited by itself. A child still alive `graceMs`
 * after its source finished prints what is left on its event loop and exits 99, so a loop that
 * re-armed itself after close shows up as a failure naming the resource, never as a hang.
 */
export function runUntilExit(
  source: string,
  env: Record<string, string>,
  graceMs = 3_000,
  hardLimitMs = 60_000,
): Promise<ExitReport> {
  const program = `${source}
;setTimeout(() => {
  process.stderr.write('\\nLEFT-ON-LOOP ' + JSON.stringify(process.getActiveResourcesInfo()) + '\\n');
  process.exit(99);
}, ${graceMs}).unref();
`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', program], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    // Only a child stuck before close (e.g. a start that never returns) reaches this.
    const hard = setTimeout(() => child.kill('SIGKILL'), hardLimitMs);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(hard);
      const m = /LEFT-ON-LOOP (.*)\n/.exec(stderr);
      resolve({ code, leftover: m ? (JSON.parse(m[1]!) as string[]) : undefined, stderr: stderr.slice(-4_000) });
    });
  });
}

/** A file URL for `import()` in a child's source. */
export const moduleUrl = (relative: string, base: string | URL): string => JSON.stringify(new URL(relative, base).href);
