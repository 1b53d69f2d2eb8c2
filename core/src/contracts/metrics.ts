/**
 * Prometheus names other processes read: the dashboard and the bench scrape ingest's /metrics, the
 * end-to-end tests scrape billing-sync's. A renamed metric then fails to compile on the reading
 * side instead of reading as zero.
 */
export const INGEST_METRICS = {
  rejected: 'meterd_ingest_events_rejected_total',
  requests: 'meterd_ingest_requests_total',
  accepted: 'meterd_ingest_events_accepted_total',
  duplicate: 'meterd_ingest_events_duplicate_total',
  dedupeRoundTrips: 'meterd_ingest_dedupe_round_trips_total',
  spoolFsyncs: 'meterd_ingest_spool_fsyncs_total',
  spoolFsyncErrors: 'meterd_ingest_spool_fsync_errors_total',
  quotaRebuilds: 'meterd_ingest_quota_rebuilds_total',
  dedupeRecoveryFailures: 'meterd_ingest_dedupe_recovery_failures_total',
  spoolBytes: 'meterd_ingest_spool_unshipped_bytes',
  spoolRows: 'meterd_ingest_spool_unshipped_rows',
  shippedRows: 'meterd_ingest_shipped_rows_total',
  quarantinedRows: 'meterd_ingest_quarantined_rows_total',
  shipFailures: 'meterd_ingest_ship_failures_total',
  dedupeCommitFailures: 'meterd_ingest_dedupe_commit_failures_total',
  shipSeconds: 'meterd_ingest_flush_seconds',
  commitSeconds: 'meterd_ingest_group_commit_seconds',
} as const;

/** The aggregator's cycle time, which the bench's soak scenario reads per minute. */
export const AGGREGATOR_METRICS = {
  cycleSeconds: 'aggregator_cycle_seconds',
} as const;

export const BILLING_METRICS = {
  passes: 'billing_passes_total',
  planned: 'billing_rows_planned_total',
  corrections: 'billing_corrections_total',
  unbillable: 'billing_unbillable_total',
  stale: 'billing_stale_corrections_skipped_total',
  rejected: 'billing_rejected_total',
  retriedRejected: 'billing_rejected_retried_total',
  recheckErrors: 'billing_rejected_recheck_errors_total',
  resendChecks: 'billing_resend_checks_total',
  resendSettled: 'billing_resend_settled_total',
  resendUnsettled: 'billing_resend_unsettled_total',
  rejectedRows: 'billing_rejected_rows',
  eventsSent: 'billing_meter_events_sent_total',
  streamCalls: 'billing_stream_calls_total',
  duplicates: 'billing_duplicates_total',
  retries: 'billing_stripe_retries_total',
  rateLimited: 'billing_stripe_rate_limited_total',
  failures: 'billing_meter_events_failed_total',
  sessionRenewals: 'billing_session_renewals_total',
  pending: 'billing_pending_rows',
  usageAsOfAge: 'billing_usage_as_of_age_seconds',
} as const;
