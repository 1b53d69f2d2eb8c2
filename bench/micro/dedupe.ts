import { randomBytes } from 'node:crypto';
import { createRedis, scanEveryPrimary, type Redis } from '@meterd/core/store';
import { claimAndCommit, type DedupeModule } from '../src/stages/redis-claim.js';
import { isMain, measure, print, type MicroResult } from './harness.js';

/**
 * ingest's dedupe round trips alone: the real claim and commit scripts (ingest's compiled
 * dedupe/redis.js, imported by path like rows.ts) on new keys of one workspace, one call in flight
 * at a time as a pipeline thread sends them, in the bench's two shapes (a batch tick of ~100 keys,
 * a single-event tick of a few). Per key it reports:
 *
 * - the client's CPU (process.cpuUsage: argument encoding, reply parsing, GC), the part of
 *   ingest's CPU per event that the script's arguments decide;
 * - Redis's time in the scripts (INFO commandstats, EVALSHA usec: wall time, which a busy machine
 *   stretches) and Redis's CPU time (INFO cpu, user + sys), both exact only on a Redis no one else
 *   uses: `REDIS_URL=redis://127.0.0.1:PORT` of a private `redis-server --port PORT --save ''`;
 * - wall time per key of claim + commit.
 *
 * Also, without Redis: `hashes` (the 16-byte MD5 of each key of a tick, end to end in one Buffer), per key.
 *
 * `--deduper PATH` measures another build's dedupe/redis.js (a checkout of main) with the same load;
 * it must have the signatures of bench/src/stages/redis-claim.ts's BenchDeduper (commit takes the
 * claim's period since quota reservations).
 */
export interface DedupeResult {
  keysPerCall: number;
  keys: number;
  clientCpuUsPerKey: number;
  redisUsPerKey: number;
  redisCpuUsPerKey: number;
  wallUsPerKey: number;
}

const SHAPES = [100, 4] as const;

async function load(deduper: string | undefined): Promise<DedupeModule> {
  const url = deduper ?? new URL('../../../ingest/dist/src/dedupe/redis.js', import.meta.url).href;
  try {
    return (await import(url)) as DedupeModule;
  } catch (err) {
    throw new Error(`cannot load ${url}: build ingest first (npx tsc -b ingest)`, { cause: err });
  }
}

/** The CPU of `hashes` per key, for a tick of 100 keys (no Redis: the client is never connected). */
export async function runHashes(opts: { deduper?: string } = {}): Promise<MicroResult[]> {
  const m = await load(opts.deduper);
  const redis = createRedis(new URL('redis://127.0.0.1:1'), { lazyConnect: true });
  const d = new m.RedisDeduper(redis, { windowSeconds: 3_600, pendingTtlMs: 10_000, hotSeconds: 60, prefix: 'micro' });
  const ticks = Array.from({ length: 16 }, (_, t) =>
    Array.from({ length: 100 }, (_, i) => `checkout.completed:order-${t}-${i}-2f1c9a`),
  );
  const out = [measure('dedupe hashes (MD5 of each key), per key of 100', (i) => d.hashes(ticks[i & 15]!), 1_000, 100)];
  redis.disconnect();
  return out;
}

export async function run(opts: { ms?: number; deduper?: string } = {}): Promise<DedupeResult[]> {
  const m = await load(opts.deduper);
  const redis = createRedis(new URL(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'));
  const prefix = `micro${randomBytes(4).toString('hex')}`;
  try {
    const out: DedupeResult[] = [];
    for (const n of SHAPES) out.push(await one(m, redis, prefix, n, opts.ms ?? 3_000));
    return out;
  } finally {
    await scanEveryPrimary(redis, `${prefix}:*`, 1_000, async (keys, node) => {
      await node.unlink(...keys);
    });
    redis.disconnect();
  }
}

async function one(m: DedupeModule, redis: Redis, prefix: string, n: number, ms: number): Promise<DedupeResult> {
  // A short window: whatever the cleanup misses expires within hours.
  const d = new m.RedisDeduper(redis, { windowSeconds: 3_600, pendingTtlMs: 10_000, hotSeconds: 60, prefix });
  const ws = `ws_micro${n}`;
  await d.markFresh(ws);
  const now = Date.now();
  const sec = Math.floor(now / 1000);
  const hour = Math.floor(sec / 3600);
  const row = `evt_0000000000000000000001|1|1234|USD|${sec}|${sec}`;
  let round = 0;
  const call = async (): Promise<void> => {
    const keys: string[] = new Array<string>(n);
    for (let i = 0; i < n; i++) keys[i] = `checkout.completed:order-${round}-${i}-2f1c9a`;
    const rows = new Array<string>(n).fill(row);
    const hours = new Array<number>(n).fill(hour);
    await claimAndCommit(d, { workspaceId: ws, period: '202612', keys, rows, token: `P:micro:${round++}`, hours });
  };
  const warmEnd = performance.now() + 300;
  while (performance.now() < warmEnd) await call();
  const redisBefore = await evalUsec(redis);
  const redisCpuBefore = await redisCpu(redis);
  const cpuBefore = process.cpuUsage();
  const t0 = performance.now();
  let keys = 0;
  while (performance.now() - t0 < ms) {
    await call();
    keys += n;
  }
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(cpuBefore);
  const redisUs = (await evalUsec(redis)) - redisBefore;
  const redisCpuUs = (await redisCpu(redis)) - redisCpuBefore;
  const r2 = (x: number) => Math.round(x * 100) / 100;
  return {
    keysPerCall: n,
    keys,
    clientCpuUsPerKey: r2((cpu.user + cpu.system) / keys),
    redisUsPerKey: r2(redisUs / keys),
    redisCpuUsPerKey: r2(redisCpuUs / keys),
    wallUsPerKey: r2((wall * 1000) / keys),
  };
}

/** Microseconds Redis has spent in EVALSHA since its start (every client's). */
async function evalUsec(redis: Redis): Promise<number> {
  const info = await redis.info('commandstats');
  return Number(/cmdstat_evalsha:calls=\d+,usec=(\d+)/.exec(info)?.[1] ?? 0);
}

/** Microseconds of CPU (user + sys) Redis has used since its start. */
async function redisCpu(redis: Redis): Promise<number> {
  const info = await redis.info('cpu');
  const sec = (name: string) => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? 0);
  return Math.round((sec('used_cpu_user') + sec('used_cpu_sys')) * 1e6);
}

export function printDedupe(results: DedupeResult[]): void {
  process.stdout.write(
    '\ndedupe claim + commit alone (one call in flight, new keys)\n| keys per call | keys | client CPU µs/key | Redis EVALSHA µs/key | Redis CPU µs/key | wall µs/key |\n|---:|---:|---:|---:|---:|---:|\n',
  );
  for (const r of results)
    process.stdout.write(
      `| ${r.keysPerCall} | ${r.keys.toLocaleString('en-US')} | ${r.clientCpuUsPerKey} | ${r.redisUsPerKey} | ${r.redisCpuUsPerKey} | ${r.wallUsPerKey} |\n`,
    );
}

if (isMain(import.meta.url)) {
  const at = process.argv.indexOf('--deduper');
  const deduper = at > 0 ? process.argv[at + 1] : undefined;
  const url = deduper === undefined ? undefined : new URL(`file://${deduper}`).href;
  print(await runHashes({ deduper: url }));
  printDedupe(await run({ deduper: url }));
}
