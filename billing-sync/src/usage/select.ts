import type { ClickHouseClient } from '@clickhouse/client';
import type { BillingConfig } from '../config.js';
import { UsageSourceUnavailableError } from '../errors.js';
import { ClickHouseRawUsage } from './clickhouse-raw.js';
import { ClickHouseRollupUsage, missingRollupTables } from './clickhouse-rollups.js';
import type { UsageSource } from './source.js';

/**
 * The source BILLING_USAGE_SOURCE names. Rollups are refused (not silently swapped for the raw
 * table) when their tables are missing: a quiet fallback would change what is billed and how
 * fast without anyone deciding it.
 */
export async function createUsageSource(
  cfg: Pick<BillingConfig, 'BILLING_USAGE_SOURCE' | 'AGGREGATOR_SHARDS'>,
  ch: ClickHouseClient,
): Promise<UsageSource> {
  if (cfg.BILLING_USAGE_SOURCE === 'raw') return new ClickHouseRawUsage(ch);
  const missing = await missingRollupTables(ch);
  if (missing.length > 0) {
    throw new UsageSourceUnavailableError(
      `BILLING_USAGE_SOURCE=rollups but ${missing.join(', ')} do not exist: run the ClickHouse migrations (npm run migrate) or set BILLING_USAGE_SOURCE=raw`,
    );
  }
  return new ClickHouseRollupUsage(ch, cfg.AGGREGATOR_SHARDS);
}
