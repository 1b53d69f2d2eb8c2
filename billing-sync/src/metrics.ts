import { BILLING_METRICS } from '@meterd/core/contracts';
import { MetricsRegistry, type Counter, type Gauge } from '@meterd/core/metrics';

export interface BillingMetrics {
  registry: MetricsRegistry;
  passes: Counter;
  planned: Counter;
  corrections: Counter;
  unbillable: Counter;
  stale: Counter;
  rejected: Counter;
  retriedRejected: Counter;
  recheckErrors: Counter;
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
    passes: r.counter(BILLING_METRICS.passes, 'Plan-and-push passes completed.'),
    planned: r.counter(BILLING_METRICS.planned, 'Ledger rows (meter events to send) planned.'),
    corrections: r.counter(BILLING_METRICS.corrections, 'Revisions after the first of a window (late data).'),
    unbillable: r.counter(
      BILLING_METRICS.unbillable,
      'Differences Stripe can no longer apply (window past its 35-day limit), recorded as unbillable in the ledger.',
    ),
    stale: r.counter(
      BILLING_METRICS.stale,
      "Downward corrections not planned because the totals read were older than the window's last planning.",
    ),
    rejected: r.counter(
      BILLING_METRICS.rejected,
      'Ledger rows rejected: no active meter for their event name, or named in a Stripe error report.',
    ),
    retriedRejected: r.counter(
      BILLING_METRICS.retriedRejected,
      'Rejected rows whose cause was fixed (meter and customer exist), planned again.',
    ),
    recheckErrors: r.counter(
      BILLING_METRICS.recheckErrors,
      "Re-checks of a rejected row's customer that Stripe answered with an error other than 404; the pass went on.",
    ),
    resendChecks: r.counter(
      BILLING_METRICS.resendChecks,
      'Summaries read before re-sending rows first sent more than STRIPE_RESEND_CHECK_HOURS ago.',
    ),
    resendSettled: r.counter(
      BILLING_METRICS.resendSettled,
      "Rows found already counted by Stripe's summary: marked sent, not re-sent.",
    ),
    resendUnsettled: r.counter(
      BILLING_METRICS.resendUnsettled,
      "Rows not re-sent because Stripe's summary matched neither outcome.",
    ),
    rejectedRows: r.gauge(
      BILLING_METRICS.rejectedRows,
      'Ledger rows rejected and not yet retried, after the last pass.',
    ),
    eventsSent: r.counter(BILLING_METRICS.eventsSent, 'Meter events Stripe accepted.'),
    streamCalls: r.counter(BILLING_METRICS.streamCalls, 'Successful v2 meter event stream calls.'),
    duplicates: r.counter(
      BILLING_METRICS.duplicates,
      'Events Stripe already had (identifier dedupe): counted as delivered.',
    ),
    retries: r.counter(BILLING_METRICS.retries, 'Stripe calls retried (429, 5xx, timeouts).'),
    rateLimited: r.counter(BILLING_METRICS.rateLimited, 'Stripe answers 429.'),
    failures: r.counter(BILLING_METRICS.failures, 'Meter events Stripe refused for good.'),
    sessionRenewals: r.counter(
      BILLING_METRICS.sessionRenewals,
      'v2 sessions renewed after Stripe reported them expired.',
    ),
    pending: r.gauge(BILLING_METRICS.pending, 'Ledger rows waiting to be sent, after the last pass.'),
    usageAsOfAge: r.gauge(
      BILLING_METRICS.usageAsOfAge,
      "Age of the usage source's as-of at the last pass (aggregator lag with rollups); -1: nothing complete yet.",
    ),
  };
}
