import { CH_TABLES } from '@meterd/core/contracts';

/** The three rollup granularities, their tables, and how a time is bucketed into each. */
export const GRANULARITIES = ['hour', 'day', 'month'] as const;
export type Granularity = (typeof GRANULARITIES)[number];

export const ROLLUP_TABLE: Readonly<Record<Granularity, string>> = Object.freeze({
  hour: CH_TABLES.usageHourly,
  day: CH_TABLES.usageDaily,
  month: CH_TABLES.usageMonthly,
});

const HOUR = 3_600_000;
const DAY = 86_400_000;

/** Start of the bucket holding `ms`, in UTC epoch milliseconds. */
export function bucketStart(g: Granularity, ms: number): number {
  if (g === 'hour') return Math.floor(ms / HOUR) * HOUR;
  if (g === 'day') return Math.floor(ms / DAY) * DAY;
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
}

/** Start of the bucket after the one starting at `start`. */
export function bucketEnd(g: Granularity, start: number): number {
  if (g === 'hour') return start + HOUR;
  if (g === 'day') return start + DAY;
  const d = new Date(start);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
}

/**
 * The same bucketing in SQL. toStartOfMonth returns a Date; converting it back to DateTime('UTC')
 * keeps every rollup table's window_start one type (checked on 18.16 and chDB).
 */
export function bucketSql(g: Granularity, column: string): string {
  if (g === 'hour') return `toStartOfHour(${column})`;
  if (g === 'day') return `toStartOfDay(${column})`;
  return `toDateTime(toStartOfMonth(${column}), 'UTC')`;
}

/** ClickHouse's `YYYY-MM-DD hh:mm:ss` (UTC) text to epoch milliseconds. */
export function parseChDateTime(s: string): number {
  return Date.parse(`${s.replace(' ', 'T')}Z`);
}
