export {
  createPool,
  pgHealthy,
  inTransaction,
  sessionUrl,
  DEFAULT_STATEMENT_TIMEOUT_MS,
  type Pool,
  type PoolClient,
  type PoolOptions,
} from './postgres.js';
export {
  createRedis,
  redisHealthy,
  redisPrimaries,
  scanEveryPrimary,
  type Redis,
  type RedisTarget,
  type RedisClusterNode,
} from './redis.js';
export {
  RejectionLog,
  readRejections,
  type Rejected,
  REJECTIONS_KEPT_MS,
  REJECTIONS_PER_WORKSPACE,
} from './rejections.js';
export {
  insertWorkspace,
  insertApiKey,
  findKeyByHash,
  revokeApiKey,
  testBucketOf,
  WORKSPACE_COLUMNS,
  type Workspace,
  type KeyRecord,
} from './workspaces.js';
