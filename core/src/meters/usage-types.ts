import type { MeterDefinition } from './definition.js';

/** Windows a meter's usage is read in; day and month are cut in the query's IANA time zone. */
export const METER_WINDOWS = ['hour', 'day', 'month'] as const;
export type MeterWindow = (typeof METER_WINDOWS)[number];

/**
 * One read of a meter's rollups (the usage API, alerts, billing-sync). `groupBy` is a subset of
 * the meter's group_by; `filter` keeps only rows whose group values match (keys from group_by).
 */
export interface MeterUsageQuery {
  meter: MeterDefinition;
  /** The bucket whose events are read: the live workspace or its test bucket. */
  bucketId: string;
  fromMs: number;
  toMs: number;
  window: MeterWindow;
  /** IANA zone name; 'UTC' by default. */
  tz: string;
  groupBy: readonly string[];
  filter: Readonly<Record<string, string>>;
  /** Only closed hours (what billing may push); otherwise closed hours plus the open tail. */
  closedOnly: boolean;
}

export interface MeterUsageRow {
  /** Window bounds, epoch ms. */
  startMs: number;
  endMs: number;
  /** The values of the query's groupBy properties ('' where an event did not carry one). */
  group: Record<string, string>;
  /** Exact decimal string: sums of 64-bit integers can pass 2^53. */
  value: string;
  /**
   * Added by the data path (issue 20): for a meter over gmv_cents only, the ISO 4217 currency of
   * the row's amounts. Such a meter's rows are split by currency as well as by group: amounts of
   * different currencies are never added (docs/meters.md). Absent for every other meter.
   */
  currency?: string;
}
