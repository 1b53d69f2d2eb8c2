import { MetricsRegistry, type Counter, type Gauge } from '@meterd/core';

export interface BillingMetrics {
  registry: MetricsRegistry;
  passes: Counter;
  planned: Counter;
  corrections: Counter;
  blocked: Counter;
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
    blocked: r.counter('billing_corrections_blocked_total', 'Downward corrections impossible because Stripe\'s 24 h cancel window had passed.'),
    eventsSent: r.counter('billing_meter_events_sent_total', 'Meter events Stripe accepted.'),
    streamCalls: r.counter('billing_stream_calls_total', 'Successful v2 meter event stream calls.'),
    duplicates: r.counter('billing_duplicates_total', 'Events Stripe already had (identifier dedupe): counted as delivered.'),
    retries: r.counter('billing_stripe_retries_total', 'Stripe calls retried (429, 5xx, timeouts).'),
    rateLimited: r.counter('billing_stripe_rate_limited_total', 'Stripe answers 429.'),
    failures: r.counter('billing_meter_events_failed_total', 'Meter events Stripe refused for good.'),
    sessionRenewals: r.counter('billing_session_renewals_total', 'v2 sessions renewed after Stripe reported them expired.'),
    pending: r.gauge('billing_pending_rows', 'Ledger rows waiting to be sent, after the last pass.'),
    usageAsOfAge: r.gauge('billing_usage_as_of_age_seconds', 'Age of the usage source\'s as-of at the last pass (aggregator lag with rollups); -1: nothing complete yet.'),
  };
}
