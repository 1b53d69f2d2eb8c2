import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { loadConfig, storeVars } from '@meterd/core/config';
import { createRedis, type Redis } from '@meterd/core/store';
import { RedisDeduper } from '../src/dedupe/redis.js';

/**
 * The dedupe scripts on a 3-primary Redis Cluster of the test's own (infra/stack/redis-cluster.sh,
 * ports 7121–7123), through ioredis's Cluster client with auto-pipelining as ingest runs it: calls
 * for workspaces whose slots live on different primaries, sent in the same tick, must each reach
 * their own node. ioredis groups a script call by the slot of its first argument; a key count
 * there put every workspace's claim into one pipeline, which failed whole.
 */
const SCRIPT = fileURLToPath(new URL('../../../infra/stack/redis-cluster.sh', import.meta.url));
const dir = mkdtempSync(`${tmpdir()}/meterd-dedupe-cluster-`);
const env = { ...process.env, REDIS_CLUSTER_PORTS: '7121 7122 7123' };
const script = (cmd: string) => spawnSync('bash', [SCRIPT, cmd, dir], { env, encoding: 'utf8', timeout: 120_000 });
const PERIOD = '202612';
let cluster: Redis;
let d: RedisDeduper;

before(() => {
  const up = script('up');
  assert.equal(up.status, 0, up.stderr);
  cluster = createRedis(loadConfig(storeVars, { ...env, REDIS_CLUSTER_NODES: up.stdout.trim().split(' ')[1]! }));
  d = new RedisDeduper(cluster, {
    windowSeconds: 3600,
    pendingTtlMs: 60_000,
    hotSeconds: 3600,
    prefix: `dc${process.pid}:`,
  });
});
after(async () => {
  cluster?.disconnect();
  script('down');
  rmSync(dir, { recursive: true, force: true });
});

/** Two workspaces on each primary, by the slot of their hash tag. */
async function workspacesOnEveryPrimary(): Promise<string[]> {
  await cluster.ping(); // the slot map is loaded
  const slots = (cluster as unknown as { slots: string[][] }).slots;
  const byNode = new Map<string, string[]>();
  for (let i = 0; [...byNode.values()].filter((l) => l.length >= 2).length < 3; i++) {
    const ws = `ws_cluster${i}`;
    const slot = Number(await cluster.call('CLUSTER', 'KEYSLOT', d.quotaKey(ws, PERIOD)));
    const node = slots[slot]![0]!;
    const list = byNode.get(node) ?? byNode.set(node, []).get(node)!;
    if (list.length < 2) list.push(ws);
  }
  return [...byNode.values()].flat();
}

test('claims, commits, releases and start-up recommits of workspaces on every primary, sent together', async () => {
  const wss = await workspacesOnEveryPrimary();
  assert.equal(wss.length, 6);
  for (const ws of wss) await d.markFresh(ws);
  const keys = (ws: string, from: number, n: number) => Array.from({ length: n }, (_, i) => `e:${ws}:${from + i}`);
  const rows = (ks: string[]) => ks.map((_, i) => `evt_${i}|1|1|USD|1|1796100000`);

  const claims = await Promise.all(
    wss.map((ws) => d.claim({ workspaceId: ws, limit: null, period: PERIOD, keys: keys(ws, 0, 5), token: `P:${ws}` })),
  );
  for (const c of claims) assert.deepEqual(c.states, ['', '', '', '', '']);
  await Promise.all(wss.map((ws) => d.commit(ws, PERIOD, keys(ws, 0, 5), rows(keys(ws, 0, 5)), `P:${ws}`)));
  assert.deepEqual(
    await Promise.all(wss.map((ws) => d.used(ws, PERIOD))),
    wss.map(() => 5),
  );

  // Claimed, then released (the spool write failed): free again, nothing counted.
  await Promise.all(
    wss.map((ws) =>
      d.claim({ workspaceId: ws, limit: null, period: PERIOD, keys: keys(ws, 5, 2), token: `P:r:${ws}` }),
    ),
  );
  await Promise.all(wss.map((ws) => d.release(ws, PERIOD, keys(ws, 5, 2), `P:r:${ws}`)));
  for (const ws of wss) assert.equal(await cluster.get(d.dedupeKey(ws, keys(ws, 5, 1)[0]!)), null, ws);

  // A restart's repair of spooled rows whose commit never came: counted once each.
  await Promise.all(wss.map((ws) => d.recommit(ws, PERIOD, keys(ws, 5, 2), rows(keys(ws, 5, 2)))));
  assert.deepEqual(
    await Promise.all(wss.map((ws) => d.used(ws, PERIOD))),
    wss.map(() => 7),
  );
  const again = await Promise.all(
    wss.map((ws) =>
      d.claim({ workspaceId: ws, limit: null, period: PERIOD, keys: keys(ws, 0, 7), token: `P:a:${ws}` }),
    ),
  );
  for (const c of again)
    assert.ok(
      c.states.every((s) => s.startsWith('evt_')),
      JSON.stringify(c.states),
    );
});
