import { MetricsRegistry, ERROR_CODES, type Counter, type Gauge, type Histogram } from '@meterd/core';

/** Every thread calls this in the same order, so each metric has the same cell everywhere. */
export function defineIngestMetrics(reg: MetricsRegistry) {
  const rejected: Record<string, Counter> = {};
  for (const code of Object.keys(ERROR_CODES)) {
    rejected[code] = reg.counter('meterd_ingest_events_rejected_total', 'Events refused, by error code.', {
      reason: code,
    });
  }
  const requests: Record<string, Counter> = {};
  for (const route of ['meter', 'batch', 'other']) {
    requests[route] = reg.counter('meterd_ingest_requests_total', 'HTTP requests received, by route.', { route });
  }
  return {
    requests,
    accepted: reg.counter('meterd_ingest_events_accepted_total', 'Events stored durably and answered 202.'),
    duplicate: reg.counter(
      'meterd_ingest_events_duplicate_total',
      'Events answered as duplicates of an earlier event.',
    ),
    rejected,
    dedupeRoundTrips: reg.counter(
      'meterd_ingest_dedupe_round_trips_total',
      'Redis calls made to claim, commit or release idempotency keys.',
    ),
    spoolFsyncs: reg.counter('meterd_ingest_spool_fsyncs_total', 'Group commits (one write + fdatasync each).'),
    spoolBytes: reg.gauge(
      'meterd_ingest_spool_unshipped_bytes',
      'Spool bytes written durably but not yet in ClickHouse.',
    ),
    spoolRows: reg.gauge(
      'meterd_ingest_spool_unshipped_rows',
      'Spool rows written durably but not yet in ClickHouse (buffer depth).',
    ),
    shippedRows: reg.counter('meterd_ingest_shipped_rows_total', 'Rows inserted into ClickHouse from the spool.'),
    quarantinedRows: reg.counter(
      'meterd_ingest_quarantined_rows_total',
      'Spool rows ClickHouse refused for their content (parse errors), moved to SPOOL_DIR/t<i>/quarantine/ instead of blocking shipping.',
    ),
    shipFailures: reg.counter('meterd_ingest_ship_failures_total', 'Failed ClickHouse inserts (retried with backoff).'),
    shipSeconds: reg.histogram(
      'meterd_ingest_flush_seconds',
      'Time of one ClickHouse insert of a spool batch.',
      [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    ),
    commitSeconds: reg.histogram(
      'meterd_ingest_group_commit_seconds',
      'Time of one spool write + fdatasync.',
      [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
    ),
  } satisfies Record<string, Counter | Gauge | Histogram | Record<string, Counter>>;
}

export type IngestMetrics = ReturnType<typeof defineIngestMetrics>;
