import { MetricsRegistry, type Counter, type Histogram } from '@meterd/core';

export interface ControlMetrics {
  registry: MetricsRegistry;
  requests: Counter;
  errors5xx: Counter;
  signups: Counter;
  webhookAttempts: Record<'succeeded' | 'failed' | 'retry', Counter>;
  webhookLatency: Histogram;
}

export function defineControlMetrics(registry = new MetricsRegistry()): ControlMetrics {
  const attempts = (outcome: string) => registry.counter('meterd_control_webhook_attempts_total', 'Webhook delivery attempts by outcome.', { outcome });
  return {
    registry,
    requests: registry.counter('meterd_control_requests_total', 'HTTP requests answered by the control API.'),
    errors5xx: registry.counter('meterd_control_errors_5xx_total', 'Requests answered with a 5xx.'),
    signups: registry.counter('meterd_control_signups_total', 'Workspaces created through signup.'),
    webhookAttempts: { succeeded: attempts('succeeded'), failed: attempts('failed'), retry: attempts('retry') },
    webhookLatency: registry.histogram('meterd_control_webhook_latency_seconds', 'Latency of webhook POSTs.', [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]),
  };
}
