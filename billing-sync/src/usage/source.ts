/**
 * Where billing-sync reads usage: exact totals per workspace × event type × currency × window, each
 * distinct (workspace_id, event_type, idempotency_key) counted once, in its winning copy's window. Implementations are named after their
 * backend: clickhouse-rollups.ts reads the aggregator's rollups (the default), clickhouse-raw.ts
 * the deduplicated raw events table.
 */
export type WindowSize = 'hour' | 'day';

export interface UsageTotal {
  workspace_id: string;
  event_type: string;
  /** ISO 4217 code of the events' amounts; never summed across (billing keeps one meter per currency). */
  currency: string;
  /** Window start, epoch seconds (UTC). */
  window_start: number;
  quantity: bigint;
  gmv_cents: bigint;
}

export interface UsageSource {
  /** Totals of windows starting in [fromS, toS); windows without events are absent. */
  totals(fromS: number, toS: number, window: WindowSize): Promise<UsageTotal[]>;
  /**
   * Epoch seconds up to which windows are final: every window ending at or before it is complete
   * in totals() (for the rollups, every hour there is closed), at most `nowS`; null when nothing
   * is known to be complete yet. Windows are closed against this instant, never against the wall
   * clock alone, so a window is never pushed from totals that are still being computed.
   */
  asOf(nowS: number): Promise<number | null>;
}

export const WINDOW_SECONDS: Record<WindowSize, number> = { hour: 3_600, day: 86_400 };

/**
 * End of the last window billing may push: complete in the source (`asOf`) and at least
 * `closeDelayS` past its end on the wall clock (late-shipped events are in it), window-aligned.
 */
export function lastClosedEnd(asOf: number, nowS: number, closeDelayS: number, size: number): number {
  return Math.floor(Math.min(asOf, nowS - closeDelayS) / size) * size;
}
