import { AGGREGATOR_METRICS } from '@meterd/core/contracts';
import { METER_BACKFILL_ERRORS, type MeterBackfillErrorCode } from '@meterd/core/meters';
import { MetricsRegistry, type Counter, type Gauge, type Histogram } from '@meterd/core/metrics';

export interface AggregatorMetrics {
  registry: MetricsRegistry;
  cycles: Counter;
  cycleErrors: Counter;
  windows: Counter;
  cycleSeconds: Histogram;
  shardsHeld: Gauge;
  watermarkAge: Gauge;
  usageRequests: Counter;
  /** Per backfill error code (core's METER_BACKFILL_ERRORS), so each shows as 0 before it happens. */
  meterBackfillsFailed: Record<MeterBackfillErrorCode, Counter>;
}

export function createAggregatorMetrics(registry = new MetricsRegistry()): AggregatorMetrics {
  return {
    registry,
    cycles: registry.counter('aggregator_cycles_total', 'Completed rollup cycles.'),
    cycleErrors: registry.counter(
      'aggregator_cycle_errors_total',
      'Rollup cycles that failed (retried on the next poll).',
    ),
    windows: registry.counter(
      'aggregator_windows_recomputed_total',
      'Hourly (workspace, hour) windows recomputed from raw events.',
    ),
    cycleSeconds: registry.histogram(
      AGGREGATOR_METRICS.cycleSeconds,
      'Duration of one rollup cycle.',
      // Fine from 25 ms to 1 s, where cycles fall: the soak bench reads each minute's median from it.
      [0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2.5, 5, 10],
    ),
    shardsHeld: registry.gauge('aggregator_shards_held', 'Workspace shards this process holds the lease of.'),
    watermarkAge: registry.gauge(
      'aggregator_watermark_age_seconds',
      'Freshness: seconds since the oldest as-of time of the shards this process holds (everything committed to events before it is in the rollups); -1 when it holds none.',
    ),
    usageRequests: registry.counter('aggregator_usage_requests_total', 'Requests to GET /api/v1/workspaces/:id/usage.'),
    meterBackfillsFailed: Object.fromEntries(
      Object.keys(METER_BACKFILL_ERRORS).map((code) => [
        code,
        registry.counter(
          'aggregator_meter_backfills_failed_total',
          "Meter backfills this process stopped in state failed, by code (meter.backfill.error.code, docs/meters.md): each waits for an operator's fix.",
          { code },
        ),
      ]),
    ) as Record<MeterBackfillErrorCode, Counter>,
  };
}
