import { INGEST_METRICS } from '@meterd/core/contracts';
import { ERROR_CODES } from '@meterd/core/errors';
import { MetricsRegistry, type Counter, type Gauge, type Histogram } from '@meterd/core/metrics';

/** Every thread calls this in the same order, so each metric has the same cell everywhere. */
export function defineIngestMetrics(reg: MetricsRegistry) {
  const rejected: Record<string, Counter> = {};
  for (const code of Object.keys(ERROR_CODES)) {
    rejected[code] = reg.counter(INGEST_METRICS.rejected, 'Events refused, by error code.', {
      reason: code,
    });
  }
  const requests: Record<string, Counter> = {};
  for (const route of ['meter', 'batch', 'other']) {
    requests[route] = reg.counter(INGEST_METRICS.requests, 'HTTP requests received, by route.', { route });
  }
  return {
    requests,
    accepted: reg.counter(INGEST_METRICS.accepted, 'Events stored durably and answered 202.'),
    duplicate: reg.counter(INGEST_METRICS.duplicate, 'Events answered as duplicates of an earlier event.'),
    rejected,
    dedupeRoundTrips: reg.counter(
      INGEST_METRICS.dedupeRoundTrips,
      'Redis calls made to claim, commit or release idempotency keys.',
    ),
    spoolFsyncs: reg.counter(
      INGEST_METRICS.spoolFsyncs,
      'fdatasync calls of the spool (each covers one or more groups).',
    ),
    spoolFsyncErrors: reg.counter(
      INGEST_METRICS.spoolFsyncErrors,
      'SPOOL_FSYNC=interval: background fdatasyncs that failed (acknowledged rows a power loss could take).',
    ),
    quotaRebuilds: reg.counter(
      INGEST_METRICS.quotaRebuilds,
      'Workspace quota counters rebuilt from ClickHouse after Redis lost its data (docs/redis.md).',
    ),
    dedupeRecoveryFailures: reg.counter(
      INGEST_METRICS.dedupeRecoveryFailures,
      'Recoveries of a workspace after a Redis data loss that failed; retried after a backoff, its claims answer 503 meanwhile.',
    ),
    dedupeCommitFailures: reg.counter(
      INGEST_METRICS.dedupeCommitFailures,
      'Redis commits of stored events that failed; each is retried with backoff until it lands (docs/redis.md).',
    ),
    spoolBytes: reg.gauge(INGEST_METRICS.spoolBytes, 'Spool bytes written durably but not yet in ClickHouse.'),
    spoolRows: reg.gauge(
      INGEST_METRICS.spoolRows,
      'Spool rows written durably but not yet in ClickHouse (buffer depth).',
    ),
    shippedRows: reg.counter(
      INGEST_METRICS.shippedRows,
      'Rows inserted into ClickHouse from the spool (with INGEST_ACK=clickhouse: before their 202).',
    ),
    quarantinedRows: reg.counter(
      INGEST_METRICS.quarantinedRows,
      'Spool rows ClickHouse refused for their content (parse errors), moved to SPOOL_DIR/t<i>/quarantine/ instead of blocking shipping.',
    ),
    shipFailures: reg.counter(INGEST_METRICS.shipFailures, 'Failed ClickHouse inserts (retried with backoff).'),
    shipSeconds: reg.histogram(
      INGEST_METRICS.shipSeconds,
      "Time of one ClickHouse insert of a spool batch (with INGEST_ACK=clickhouse: of a group commit's rows).",
      [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    ),
    commitSeconds: reg.histogram(
      INGEST_METRICS.commitSeconds,
      "From a group's write to its acknowledgement (write, plus the fdatasync that covers it when SPOOL_FSYNC=always; with INGEST_ACK=clickhouse, the insert and its batch record).",
      [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
    ),
  } satisfies Record<string, Counter | Gauge | Histogram | Record<string, Counter>>;
}

export type IngestMetrics = ReturnType<typeof defineIngestMetrics>;
