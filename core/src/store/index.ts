export { createPool, pgHealthy, inTransaction, type Pool, type PoolClient } from './postgres.js';
export { createRedis, redisHealthy, type Redis } from './redis.js';
export {
  insertWorkspace,
  insertApiKey,
  findKeyByHash,
  revokeApiKey,
  type Workspace,
  type KeyRecord,
} from './workspaces.js';
