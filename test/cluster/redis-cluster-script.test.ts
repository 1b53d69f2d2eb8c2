import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from '../support/services.js';

/**
 * infra/stack/redis-cluster.sh on ports of its own (7111–7113) and a directory of its own: `up`
 * creates a cluster that serves every slot, a second `up` reuses it, `down` then `up` brings the
 * data back, a node whose config was lost makes `up` recreate the cluster, and `down` stops what
 * it started. (test/cluster/redis-cluster.test.ts uses the default ports for the services.)
 */
const PORTS = ['7111', '7112', '7113'];
const dir = mkdtempSync(join(tmpdir(), 'meterd-redis-cluster-'));
const env = { ...process.env, REDIS_CLUSTER_PORTS: PORTS.join(' ') };

const script = (cmd: string) =>
  spawnSync('bash', [join(ROOT, 'infra/stack/redis-cluster.sh'), cmd, dir], {
    env,
    encoding: 'utf8',
    timeout: 120_000,
  });
const cli = (port: string, ...args: string[]) =>
  spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', port, '-c', ...args], {
    encoding: 'utf8',
    timeout: 10_000,
  }).stdout.trim();
const pidOf = (port: string) => Number(readFileSync(join(dir, port, 'redis.pid'), 'utf8'));

after(() => {
  script('down');
  rmSync(dir, { recursive: true, force: true });
});

test('up creates, reuses, keeps data across down/up, recreates a stale cluster; down stops its nodes', () => {
  const seeds = PORTS.map((p) => `127.0.0.1:${p}`).join(',');
  const first = script('up');
  assert.equal(first.status, 0, first.stderr);
  assert.equal(first.stdout.trim(), `started ${seeds}`);
  for (const p of PORTS) {
    assert.match(cli(p, 'cluster', 'info'), /cluster_state:ok[\s\S]*cluster_slots_assigned:16384[\s\S]*known_nodes:3/);
    // Durable like the standalone stack, at absolute paths.
    assert.deepEqual(cli(p, 'config', 'get', 'appendonly').split('\n'), ['appendonly', 'yes']);
    assert.deepEqual(cli(p, 'config', 'get', 'maxmemory-policy').split('\n'), ['maxmemory-policy', 'noeviction']);
    assert.equal(cli(p, 'config', 'get', 'dir').split('\n')[1], join(dir, p));
  }
  const pids = PORTS.map(pidOf);

  const again = script('up');
  assert.equal(again.stdout.trim(), `reused ${seeds}`);
  assert.deepEqual(PORTS.map(pidOf), pids);

  assert.equal(cli(PORTS[0]!, 'set', '{ws_x}:k', 'kept'), 'OK');
  assert.match(script('down').stdout, /stopped/);
  assert.equal(script('status').status, 1);
  const restarted = script('up');
  assert.equal(restarted.stdout.trim(), `started ${seeds}`, restarted.stderr);
  assert.equal(cli(PORTS[1]!, 'get', '{ws_x}:k'), 'kept');

  // One node loses its config: the others remember a cluster it no longer knows.
  process.kill(pidOf(PORTS[2]!), 'SIGKILL');
  rmSync(join(dir, PORTS[2]!), { recursive: true, force: true });
  const stale = script('up');
  assert.equal(stale.status, 0, stale.stderr);
  assert.match(stale.stderr, /stale cluster config/);
  assert.equal(script('status').status, 0);
  assert.equal(cli(PORTS[0]!, 'get', '{ws_x}:k'), '');

  script('down');
  for (const p of PORTS) assert.equal(cli(p, 'ping'), '');
});

test('the cluster is the machine’s, not the checkout’s: a second checkout finds and stops what the first started', () => {
  // Two checkouts side by side (a fresh CI clone beside a working tree): each kept its own state,
  // so one's `down` or kill -9 missed the other's nodes, and its after-run `down` stopped a cluster
  // the other's tests were using.
  const machine = mkdtempSync(join(tmpdir(), 'meterd-machine-'));
  const checkouts = ['a', 'b'].map((name) => {
    const root = join(machine, name);
    cpSync(join(ROOT, 'infra/stack'), join(root, 'infra/stack'), { recursive: true });
    return root;
  });
  const ports = ['7121', '7122', '7123'];
  const run = (root: string, cmd: string) =>
    spawnSync('bash', [join(root, 'infra/stack/redis-cluster.sh'), cmd], {
      env: { ...process.env, REDIS_CLUSTER_PORTS: ports.join(' '), METERD_MACHINE_STACK_DIR: join(machine, 'stack') },
      encoding: 'utf8',
      timeout: 120_000,
    });
  try {
    const up = run(checkouts[0]!, 'up');
    assert.equal(up.status, 0, up.stderr);
    assert.match(up.stdout, /^started /);
    assert.equal(run(checkouts[1]!, 'up').stdout.trim().split(' ')[0], 'reused');
    assert.match(run(checkouts[1]!, 'down').stdout, /stopped/);
    for (const p of ports) assert.equal(cli(p, 'ping'), '', `${p} stopped by the other checkout`);
  } finally {
    run(checkouts[0]!, 'down');
    rmSync(machine, { recursive: true, force: true });
  }
});
