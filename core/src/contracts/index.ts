export {
  DEFAULT_REDIS_KEY_PREFIX,
  dedupeKey,
  dedupeTierBase,
  dedupeEpochMarker,
  dedupeRegistryKey,
  dedupeShippedKey,
  quotaKey,
  rateLimitKey,
  rejectionsKey,
  dashboardSessionKey,
  KEY_REVOKED_CHANNEL,
  PLAN_CHANGED_CHANNEL,
  BATCHES_RECORDED_CHANNEL,
} from './redis-keys.js';
export { shardSql } from './shards.js';
export { INGEST_METRICS, BILLING_METRICS, AGGREGATOR_METRICS } from './metrics.js';
export { CH_TABLES, PG_TABLES } from './tables.js';
