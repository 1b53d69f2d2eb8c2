import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './paths.js';
import { discoverProcesses, processEnv, RunSecrets, type ProcessSpec } from './supervisor-plan.js';

/**
 * `npm start`'s process supervisor. Every workspace package may declare processes in its
 * package.json (see supervisor-plan.ts); the supervisor runs
 * each built entry point as its own process, prefixes its log lines with its name, restarts it with
 * backoff when it dies, and stops them all on Ctrl-C or SIGTERM. A package without a built entry
 * point is skipped with a note: nothing is started that does not exist.
 */
interface Running {
  spec: ProcessSpec;
  dir: string;
  child?: ChildProcess;
  restarts: number;
  startedAt: number;
}

const COLORS = [36, 33, 35, 32, 34, 31, 96, 93];

const running: Running[] = [];
const secrets = new RunSecrets();
let stopping = false;

function start(r: Running, color: number): void {
  const child = spawn(process.execPath, [join(r.dir, r.spec.main)], {
    cwd: REPO_ROOT,
    env: processEnv(r.spec, secrets),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  r.child = child;
  r.startedAt = Date.now();
  const prefix = `\x1b[${color}m${r.spec.name.padEnd(14)}\x1b[0m| `;
  for (const stream of [child.stdout!, child.stderr!]) {
    let rest = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      const lines = (rest + chunk).split('\n');
      rest = lines.pop()!;
      for (const l of lines) process.stdout.write(prefix + l + '\n');
    });
  }
  child.on('exit', (code, signal) => {
    r.child = undefined;
    if (stopping) return maybeExit();
    // A process that ran for a while before dying starts again at once; one that keeps dying backs off.
    if (Date.now() - r.startedAt > 30_000) r.restarts = 0;
    const delay = Math.min(30_000, 500 * 2 ** r.restarts++);
    process.stdout.write(`${prefix}exited (${signal ?? code}); restarting in ${delay} ms\n`);
    setTimeout(() => !stopping && start(r, color), delay);
  });
}

function maybeExit(): void {
  if (running.every((r) => r.child === undefined)) process.exit(0);
}

function stop(signal: NodeJS.Signals): void {
  if (stopping) return;
  stopping = true;
  process.stdout.write(`\nstopping (${signal})…\n`);
  for (const r of running) r.child?.kill('SIGTERM');
  setTimeout(() => {
    for (const r of running) r.child?.kill('SIGKILL');
    process.exit(0);
  }, 25_000).unref();
  maybeExit();
}

const all = discoverProcesses();
all.forEach(({ spec, dir }, i) => {
  if (!existsSync(join(dir, spec.main))) {
    console.log(`(skipping ${spec.name}: ${spec.main} is not built)`);
    return;
  }
  const r: Running = { spec, dir, restarts: 0, startedAt: 0 };
  running.push(r);
  start(r, COLORS[i % COLORS.length]!);
});
if (running.length === 0) {
  console.error('no services to run: build first (npm run build)');
  process.exit(1);
}
console.log('\nmeterd is starting:');
for (const { spec } of running) {
  if (spec.url === undefined) continue;
  const extra = [
    spec.health && `health ${spec.url}${spec.health}`,
    spec.metrics && `metrics ${spec.url}${spec.metrics}`,
  ]
    .filter(Boolean)
    .join(', ');
  console.log(`  ${spec.name.padEnd(14)} ${spec.url}${extra ? `  (${extra})` : ''}`);
}
console.log('Ctrl-C stops everything.\n');
process.on('SIGINT', () => stop('SIGINT'));
process.on('SIGTERM', () => stop('SIGTERM'));
