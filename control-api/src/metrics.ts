import { MetricsRegistry, type Counter, type Gauge, type Histogram } from '@meterd/core/metrics';

export interface ControlMetrics {
  registry: MetricsRegistry;
  requests: Counter;
  errors5xx: Counter;
  signups: Counter;
  webhookAttempts: Record<'succeeded' | 'failed' | 'retry', Counter>;
  webhookLatency: Histogram;
  meterErrorReports: Counter;
  meterEventsRejected: Counter;
  ledgerRowsRejected: Counter;
  disabledEndpoints: Gauge;
  redisUsed: Gauge;
  redisMax: Gauge;
}

export function defineControlMetrics(registry = new MetricsRegistry()): ControlMetrics {
  const attempts = (outcome: string) =>
    registry.counter('meterd_control_webhook_attempts_total', 'Webhook delivery attempts by outcome.', { outcome });
  return {
    registry,
    requests: registry.counter('meterd_control_requests_total', 'HTTP requests answered by the control API.'),
    errors5xx: registry.counter('meterd_control_errors_5xx_total', 'Requests answered with a 5xx.'),
    signups: registry.counter('meterd_control_signups_total', 'Workspaces created through signup.'),
    webhookAttempts: { succeeded: attempts('succeeded'), failed: attempts('failed'), retry: attempts('retry') },
    meterErrorReports: registry.counter(
      'meterd_control_meter_error_reports_total',
      'Stripe meter error reports (v1.billing.meter.error_report_triggered / no_meter_found) received.',
    ),
    meterEventsRejected: registry.counter(
      'meterd_control_meter_events_rejected_total',
      'Meter events Stripe reported rejected (error_count of the reports).',
    ),
    ledgerRowsRejected: registry.counter(
      'meterd_control_billing_rows_rejected_total',
      "Billing ledger rows marked rejected from the reports' sample identifiers.",
    ),
    webhookLatency: registry.histogram(
      'meterd_control_webhook_latency_seconds',
      'Latency of webhook POSTs.',
      [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    ),
    disabledEndpoints: registry.gauge(
      'meterd_control_webhook_endpoints_disabled',
      'Webhook endpoints disabled after consecutive exhausted deliveries (all workspaces).',
    ),
    redisUsed: registry.gauge(
      'meterd_redis_used_memory_bytes',
      "Redis INFO used_memory of meterd's Redis (on a cluster, of the primary nearest its maxmemory).",
    ),
    redisMax: registry.gauge(
      'meterd_redis_maxmemory_bytes',
      "Redis INFO maxmemory of meterd's Redis (0: no limit; on a cluster, of the primary nearest it).",
    ),
  };
}
