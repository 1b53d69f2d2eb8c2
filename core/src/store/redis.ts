import { Cluster, Redis as Standalone, type ClusterOptions, type RedisOptions } from 'ioredis';
import { ConfigError } from '../config/env.js';

/**
 * A connection to meterd's Redis: one server (REDIS_URL) or a Redis Cluster (REDIS_CLUSTER_NODES).
 * Both speak the same commands; on a cluster every multi-key command and script must keep its keys
 * in one hash slot (core's contracts/redis-keys: `{workspace_id}` hash tags), and `pipeline()`
 * must only hold keys of one workspace.
 */
export type Redis = Standalone | Cluster;

/** A seed node of a Redis Cluster; the client discovers the others from it (CLUSTER SLOTS). */
export interface RedisClusterNode {
  host: string;
  port: number;
}

/** Where Redis is, as core's storeVars read it. */
export interface RedisTarget {
  REDIS_URL: URL;
  /** Seeds of a Redis Cluster; empty means the one server of REDIS_URL. */
  REDIS_CLUSTER_NODES: readonly RedisClusterNode[];
}

/** Per-call options; `enableAutoPipelining` applies to the whole client, the rest to each connection. */
export type RedisExtra = Omit<RedisOptions, 'retryStrategy' | 'enableOfflineQueue' | 'readOnly'>;

const retryStrategy = (times: number): number => Math.min(times * 100, 2_000);

/**
 * Per-connection settings for a hot path: few retries per command and a connect timeout, so a Redis
 * outage turns the offline queue into fast errors instead of requests piling up in memory.
 */
const connection = {
  maxRetriesPerRequest: 2,
  connectTimeout: 5_000,
} satisfies RedisOptions;

/**
 * ioredis with auto-pipelining (commands issued in one tick share one write; measured when ingest
 * was designed at ~10× the rate of awaited single commands; on a cluster, one write per node).
 * A URL alone (tests, benchmarks) is always one server; a RedisTarget with cluster nodes is a Cluster.
 */
export function createRedis(target: URL | RedisTarget, extra: RedisExtra = {}): Redis {
  const url = target instanceof URL ? target : target.REDIS_URL;
  const nodes = target instanceof URL ? [] : target.REDIS_CLUSTER_NODES;
  if (nodes.length === 0)
    return new Standalone(url.toString(), {
      enableAutoPipelining: true,
      enableOfflineQueue: true,
      retryStrategy,
      ...connection,
      ...extra,
    });
  return new Cluster(
    nodes.map((n) => ({ ...n })),
    clusterOptions(url, extra),
  );
}

/**
 * A cluster client: MOVED and ASK are followed (up to 16 redirections, a slot-map refresh on each
 * MOVED), reads go to primaries (a replica may not yet have the claim a retry must see), and
 * REDIS_URL's scheme, username and password apply to every node (`rediss:` is TLS; its host and
 * port are not used).
 */
function clusterOptions(url: URL, extra: RedisExtra): ClusterOptions {
  // A cluster has database 0 only: a URL naming another would silently write elsewhere than meant.
  if (!/^\/?0?$/.test(url.pathname))
    throw new ConfigError([
      `REDIS_URL names database ${JSON.stringify(url.pathname.slice(1))}, but a Redis Cluster (REDIS_CLUSTER_NODES) has database 0 only`,
    ]);
  const { enableAutoPipelining = true, ...perConnection } = extra;
  const tls = url.protocol === 'rediss:';
  return {
    enableAutoPipelining,
    scaleReads: 'master',
    enableReadyCheck: true,
    enableOfflineQueue: true,
    maxRedirections: 16,
    // A failover takes a few seconds (cluster-node-timeout + election): retry through it instead of failing at once.
    retryDelayOnFailover: 200,
    retryDelayOnClusterDown: 200,
    retryDelayOnTryAgain: 100,
    slotsRefreshTimeout: 2_000,
    clusterRetryStrategy: retryStrategy,
    // Managed clusters with TLS certificates issued for a host name: keep the name, not its address.
    ...(tls ? { dnsLookup: (address, done) => done(null, address) } : {}),
    redisOptions: {
      ...connection,
      ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
      ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
      ...(tls ? { tls: {} } : {}),
      ...perConnection,
    },
  };
}

export async function redisHealthy(redis: Redis): Promise<boolean> {
  try {
    return (await redis.ping()) === 'PONG';
  } catch {
    return false;
  }
}

/**
 * The connections that hold data: the one server, or every primary of a cluster (commands without
 * a key, such as INFO, reach only one node of a cluster).
 */
export function redisPrimaries(redis: Redis): Standalone[] {
  return redis instanceof Cluster ? redis.nodes('master') : [redis];
}

/**
 * Every key matching the SCAN glob `match`, a page at a time, on every primary (a keyless SCAN
 * reaches one node of a cluster). `each` gets a page and the node holding it: keys of one page may
 * be in several slots, so a multi-key command on them is only safe when `match` pins one slot.
 */
export async function scanEveryPrimary(
  redis: Redis,
  match: string,
  count: number,
  each: (keys: string[], node: Standalone) => Promise<void>,
): Promise<void> {
  for (const node of redisPrimaries(redis)) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', match, 'COUNT', count);
      cursor = next;
      if (keys.length > 0) await each(keys, node);
    } while (cursor !== '0');
  }
}
