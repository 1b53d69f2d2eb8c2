import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO_ROOT } from '@meterd/core/testing';
import { BenchError } from './errors.js';
import type { BenchReport } from './run.js';

/**
 * Builds another git ref's ingest for a side-by-side run: `git archive` of the ref into a folder of
 * its own (no worktree left registered in the repository), its own `npm ci` (so it runs with its
 * own dependencies and its own @meterd/core), and `tsc -b ingest`. A folder already built for the
 * same commit is reused. Returns the path of its ingest entry point.
 */
export function buildRef(ref: string, log: (s: string) => void): { sha: string; ingestMain: string } {
  let sha: string;
  try {
    sha = execFileSync('git', ['rev-parse', '--verify', `${ref}^{commit}`], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
    }).trim();
  } catch {
    throw new BenchError('METERD_BENCH_USAGE', `--compare-ref ${JSON.stringify(ref)}: no such commit in ${REPO_ROOT}`);
  }
  const dir = join(tmpdir(), `meterd-bench-ref-${sha.slice(0, 12)}`);
  const ingestMain = join(dir, 'ingest/dist/src/main.js');
  if (existsSync(ingestMain)) return { sha, ingestMain };
  log(`bench: building ${ref} (${sha.slice(0, 12)}) in ${dir}…`);
  mkdirSync(dir, { recursive: true });
  const run = (cmd: string, args: string[], cwd: string) => {
    try {
      execFileSync(cmd, args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (err) {
      throw new BenchError(
        'METERD_BENCH_NOT_BUILT',
        `building ${ref}: ${cmd} ${args.join(' ')} failed: ${(err as { stderr?: Buffer }).stderr?.toString().slice(-2_000) ?? err}`,
      );
    }
  };
  run('bash', ['-c', `git archive --format=tar ${sha} | tar -x -C "${dir}"`], REPO_ROOT);
  run('npm', ['ci', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], dir);
  run('npx', ['--no-install', 'tsc', '-b', 'ingest'], dir);
  return { sha, ingestMain };
}

const fmt = (n: number | undefined) => (n === undefined ? '–' : Math.round(n).toLocaleString('en-US'));

/**
 * This checkout against the ref, per scenario, over alternating runs (this, ref, this, ref) so a
 * drift of the machine's load hits both sides alike; the ratio compares the medians.
 */
export function renderComparison(ref: string, sha: string, mine: BenchReport[], theirs: BenchReport[]): string {
  let out = `## This checkout ÷ ${ref} (${sha.slice(0, 12)})\n\n| scenario | runs | this events/s | ${ref} events/s | this ÷ ${ref} | this p99 ms | ${ref} p99 ms | both verified |\n|---|---:|---:|---:|---:|---:|---:|---|\n`;
  const scenarios = mine[0]?.phases.map((p) => p.scenario) ?? [];
  const median = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length === 0 ? NaN : s[Math.floor((s.length - 1) / 2)]!;
  };
  for (const [i, scenario] of scenarios.entries()) {
    const rate = (r: BenchReport) => r.phases[i]!.meterd.eventsPerSec ?? r.phases[i]!.meterd.requestsPerSec;
    const p99 = (r: BenchReport) => r.phases[i]!.meterd.latencyMs.p99;
    const a = median(mine.map(rate));
    const b = median(theirs.map(rate));
    const ok = [...mine, ...theirs].every((r) => r.correct);
    out += `| ${scenario} | ${mine.length} + ${theirs.length} | ${fmt(a)} | ${fmt(b)} | **${(a / b).toFixed(2)}** | ${fmt(median(mine.map(p99)))} | ${fmt(median(theirs.map(p99)))} | ${ok ? 'PASS' : 'FAIL'} |\n`;
  }
  return out;
}
