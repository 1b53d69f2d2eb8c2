import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Cluster, Redis as Standalone } from 'ioredis';
import { ConfigError } from '../config/env.js';
import { createRedis } from './redis.js';

const seeds = [{ host: '127.0.0.1', port: 7101 }];
const lazy = { lazyConnect: true };

test('cluster nodes make a Cluster client with REDIS_URL’s credentials and TLS; none, one server', async () => {
  const one = createRedis({ REDIS_URL: new URL('redis://127.0.0.1:6379'), REDIS_CLUSTER_NODES: [] }, lazy);
  assert.ok(one instanceof Standalone);
  one.disconnect();
  const c = createRedis({ REDIS_URL: new URL('rediss://meterd:p%40ss@ignored:1'), REDIS_CLUSTER_NODES: seeds }, lazy);
  assert.ok(c instanceof Cluster);
  assert.equal(c.options.scaleReads, 'master');
  assert.equal(c.options.enableReadyCheck, true);
  assert.equal(c.options.enableAutoPipelining, true);
  assert.deepEqual(
    [c.options.redisOptions?.username, c.options.redisOptions?.password, c.options.redisOptions?.tls],
    ['meterd', 'p@ss', {}],
  );
  c.disconnect();
});

test('a cluster with a REDIS_URL naming a database other than 0 is refused', () => {
  assert.throws(
    () => createRedis({ REDIS_URL: new URL('redis://h:6379/2'), REDIS_CLUSTER_NODES: seeds }, lazy),
    (e: ConfigError) => e instanceof ConfigError && /database "2"/.test(e.message),
  );
  for (const ok of ['redis://h:6379', 'redis://h:6379/', 'redis://h:6379/0'])
    createRedis({ REDIS_URL: new URL(ok), REDIS_CLUSTER_NODES: seeds }, lazy).disconnect();
});
