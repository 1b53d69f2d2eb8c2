import { execFile } from 'node:child_process';
import { createRedis } from '@meterd/core/store';

export interface RedisRate {
  opsPerSec: number;
  tool: string;
  what: string;
}

/**
 * Redis's own SET NX rate on this machine, now: `redis-benchmark` running `SET <random key> x NX EX 30`
 * with 50 clients, 16 commands per pipeline. What it measures: Redis executing plain SET NX
 * commands as fast as it can take them — no Lua, no quota counter, no reply values read by an
 * application. It is the ceiling of "one Redis, one core" for dedupe claims, not an equivalent of
 * meterd's claim script (GET + SET per key and an INCRBY per call). Keys expire after 30 s.
 * Falls back to a pipelined ioredis loop when redis-benchmark is not installed.
 */
export async function redisSetNxRate(redisUrl: URL, tag: string, requests = 2_000_000): Promise<RedisRate> {
  const host = redisUrl.hostname;
  const port = redisUrl.port || '6379';
  const args = [
    '-h',
    host,
    '-p',
    port,
    '-n',
    String(requests),
    '-c',
    '50',
    '-P',
    '16',
    '-r',
    '100000000',
    '-q',
    'SET',
    `bench:${tag}:nx:__rand_int__`,
    'x',
    'NX',
    'EX',
    '30',
  ];
  try {
    const out = await new Promise<string>((resolve, reject) => {
      execFile('redis-benchmark', args, { timeout: 120_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
    });
    // Lines are rewritten with \r while running; the last figure is the final one.
    const all = [...out.matchAll(/([\d.]+) requests per second/g)];
    const last = all[all.length - 1];
    if (last)
      return {
        opsPerSec: Math.round(Number(last[1])),
        tool: `redis-benchmark ${args.slice(4, 10).join(' ')} SET <random> x NX EX 30`,
        what: 'Redis executing pipelined SET NX EX (50 clients × 16 deep), no Lua',
      };
  } catch {
    // not installed or failed: measure from Node instead
  }
  return ioredisLoop(redisUrl, tag, 5_000);
}

async function ioredisLoop(redisUrl: URL, tag: string, ms: number): Promise<RedisRate> {
  const r = createRedis(redisUrl, { enableAutoPipelining: false });
  let done = 0;
  let n = 0;
  const until = performance.now() + ms;
  const started = performance.now();
  const lanes = Array.from({ length: 8 }, async () => {
    while (performance.now() < until) {
      const p = r.pipeline();
      for (let i = 0; i < 1_000; i++) p.set(`bench:${tag}:nx:${n++}`, 'x', 'EX', 30, 'NX');
      await p.exec();
      done += 1_000;
    }
  });
  await Promise.all(lanes);
  const secs = (performance.now() - started) / 1000;
  await r.quit();
  return {
    opsPerSec: Math.round(done / secs),
    tool: 'ioredis pipelines of 1,000 SET NX EX, 8 in flight',
    what: 'Redis executing pipelined SET NX EX from one Node process (the client may be the limit)',
  };
}
