import { str, int, url, oneOf, optionalUrl, hostPortList } from './env.js';
import { DEFAULT_REDIS_KEY_PREFIX } from '../contracts/redis-keys.js';

/** Variables every service reads: where the stores are, and logging. */
export const storeVars = {
  DATABASE_URL: url(
    'Postgres connection URL (control-plane source of truth).',
    'postgres://postgres@127.0.0.1:5432/meterd',
    ['postgres:', 'postgresql:'],
    true,
  ),
  DATABASE_SESSION_URL: optionalUrl(
    "Postgres URL for the work that needs one server session: migrations (advisory lock) and the control API's outbox LISTEN. Set it to the direct (or session-pooled) address when DATABASE_URL goes through PgBouncer in transaction mode. Empty: DATABASE_URL.",
    ['postgres:', 'postgresql:'],
    true,
  ),
  DATABASE_STATEMENT_TIMEOUT_MS: int(
    'Longest a Postgres statement may run (ms); 0 turns the limit off. Set per transaction (SET LOCAL statement_timeout) and as a client-side timeout slightly above it on every query, so it holds through PgBouncer in transaction mode too. Migrations run without it.',
    30_000,
    0,
    3_600_000,
  ),
  REDIS_URL: url(
    'Redis URL (dedupe claims, quota counters, key-revocation pub/sub).',
    'redis://127.0.0.1:6379',
    ['redis:', 'rediss:'],
    true,
  ),
  REDIS_CLUSTER_NODES: hostPortList(
    "Seed nodes of a Redis Cluster, comma-separated `host:port` (e.g. `10.0.0.5:6379,10.0.0.6:6379`); the client discovers the rest and follows MOVED/ASK. When set, REDIS_URL's host and port are not used, but its scheme (`rediss:` for TLS), username and password apply to every node. Empty: the one Redis of REDIS_URL (docs/operations.md).",
  ),
  CLICKHOUSE_URL: url('ClickHouse HTTP interface URL.', 'http://127.0.0.1:8123', ['http:', 'https:'], true),
  CLICKHOUSE_DATABASE: str('ClickHouse database holding the events and rollups.', 'meterd'),
  CLICKHOUSE_USER: str('ClickHouse user.', 'default'),
  CLICKHOUSE_PASSWORD: str('ClickHouse password.', '', true),
  CLICKHOUSE_CLUSTER: str(
    'ClickHouse cluster name (remote_servers) to run on: migrations create Replicated*MergeTree local tables and Distributed tables sharded by workspace, ON CLUSTER, and every insert is synchronous through the Distributed tables with CLICKHOUSE_INSERT_QUORUM (docs/operations.md). Empty: one server.',
    '',
  ),
  CLICKHOUSE_INSERT_QUORUM: int(
    'With CLICKHOUSE_CLUSTER: replicas of a shard that must hold an insert before it is acknowledged (insert_quorum); ingest moves its spool checkpoint only then. 2 or more survives the loss of a replica; with 2 replicas per shard, a shard with a replica down refuses inserts (its rows wait in the spool) until the replica is back.',
    2,
    1,
    16,
  ),
  LOG_LEVEL: oneOf('pino log level.', 'info', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const),
  SHUTDOWN_DELAY_MS: int(
    'After SIGTERM, how long /readyz answers 503 while the process still serves, before it stops accepting and drains: the time a load balancer needs to notice (in Kubernetes, above the readiness probe period × failure threshold). 0 stops at once.',
    0,
    0,
    120_000,
  ),
} as const;

/** The Redis key prefix, one setting for every service that reads or writes meterd's keys. */
export const redisKeyPrefixVar = {
  REDIS_KEY_PREFIX: str(
    'First segment of every Redis key meterd writes (`<prefix>:{ws}:d:…` dedupe, `<prefix>:{ws}:q:YYYYMM` quota, rate limits, dashboard sessions), so several deployments can share one Redis. Ingest and the control API must agree on it.',
    DEFAULT_REDIS_KEY_PREFIX,
  ),
} as const;

/** API-key checking, the same in every service that authenticates requests (core's Authenticator). */
export const authVars = {
  DEPLOY_API_KEY: str(
    'Operator key accepted on every non-public endpoint, for any workspace. Empty disables it.',
    '',
    true,
  ),
  KEY_CACHE_TTL_MS: int(
    'How long an API key lookup is cached (revocations are pushed over Redis at once).',
    30_000,
    0,
    3_600_000,
  ),
} as const;

/** The aggregator's shard count (core's shardSql): whoever reads per-shard progress must use the same value. */
export const aggregatorShardsVar = {
  AGGREGATOR_SHARDS: int(
    "Workspace shards of the aggregator, split evenly between the live replicas by leases in Postgres (AGGREGATOR_LEASE_TTL_MS). billing-sync (BILLING_USAGE_SOURCE=rollups: windows close once every shard has reported progress past them) and the control API's dashboard (a workspace's freshness) read per-shard progress, so every service must use the aggregator's value.",
    16,
    1,
    4096,
  ),
} as const;
