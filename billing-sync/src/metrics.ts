import { MetricsRegistry, type Counter, type Gauge } from '@meterd/core';

export interface BillingMetrics {
  registry: MetricsRegistry;
  passes: Counter;
  planned: Counter;
  corrections: Counter;
  unbillable: Counter;
  stale: Counter;
  rejected: Counter;
  retriedRejected: Counter;
  resendChecks: Counter;
  resendSettled: Counter;
  resendUnsettled: Counter;
  rejectedRows: Gauge;
  eventsSent: Counter;
  streamCalls: Counter;
  duplicates: Counter;
  retries: Counter;
  rateLimited: Counter;
  failures: Counter;
  sessionRenewals: Counter;
  pending: Gauge;
  usageAsOfAge: Gauge;
}

export function createBillingMetrics(): BillingMetrics {
  const r = new MetricsRegistry();
  return {
    registry: r,
    passes: r.counter('billing_passes_total', 'Plan-and-push passes completed.'),
    planned: r.counter('billing_rows_planned_total', 'Ledger rows (meter events to send) planned.'),
    corrections: r.counter('billing_corrections_total', 'Revisions after the first of a window (late data).'),
    unbillable: r.counter(
      'billing_unbillable_total',
      'Differences Stripe can no longer apply (window past its 35-day limit), recorded as unbillable in the ledger.',
    ),
    stale: r.counter(
      'billing_stale_corrections_skipped_total',
      "Downward corrections not planned because the totals read were older than the window's last planning.",
    ),
    rejected: r.counter(
      'billing_rejected_total',
      'Ledger rows rejected: no active meter for their event name, or named in a Stripe error report.',
    ),
    retriedRejected: r.counter(
      'billing_rejected_retried_total',
      'Rejected rows whose cause was fixed (meter and customer exist), planned again.',
    ),
    resendChecks: r.counter(
      'billing_resend_checks_total',
      'Summaries read before re-sending rows first sent more than STRIPE_RESEND_CHECK_HOURS ago.',
    ),
    resendSettled: r.counter(
      'billing_resend_settled_total',
      "Rows found already counted by Stripe's summary: marked sent, not re-sent.",
    ),
    resendUnsettled: r.counter(
      'billing_resend_unsettled_total',
      "Rows not re-sent because Stripe's summary matched neither outcome.",
    ),
    rejectedRows: r.gauge('billing_rejected_rows', 'Ledger rows rejected and not yet retried, after the last pass.'),
    eventsSent: r.counter('billing_meter_events_sent_total', 'Meter events Stripe accepted.'),
    streamCalls: r.counter('billing_stream_calls_total', 'Successful v2 meter event stream calls.'),
    duplicates: r.counter(
      'billing_duplicates_total',
      'Events Stripe already had (identifier dedupe): counted as delivered.',
    ),
    retries: r.counter('billing_stripe_retries_total', 'Stripe calls retried (429, 5xx, timeouts).'),
    rateLimited: r.counter('billing_stripe_rate_limited_total', 'Stripe answers 429.'),
    failures: r.counter('billing_meter_events_failed_total', 'Meter events Stripe refused for good.'),
    sessionRenewals: r.counter(
      'billing_session_renewals_total',
      'v2 sessions renewed after Stripe reported them expired.',
    ),
    pending: r.gauge('billing_pending_rows', 'Ledger rows waiting to be sent, after the last pass.'),
    usageAsOfAge: r.gauge(
      'billing_usage_as_of_age_seconds',
      "Age of the usage source's as-of at the last pass (aggregator lag with rollups); -1: nothing complete yet.",
    ),
  };
}
