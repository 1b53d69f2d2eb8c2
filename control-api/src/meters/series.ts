import type { MeterAggregation, MeterUsageRow } from '@meterd/core/meters';

/**
 * A meter's usage as chart series (the dashboard's meter charts): one series per group, the `top`
 * largest by their total over the range, the rest folded into "other" where the aggregation allows
 * it. Sums and counts add up, so "other" is their sum; maxima take the largest. Unique counts and
 * latest values of different groups do not combine (a user in two groups would count twice), so
 * those charts show the top groups alone and say how many were left out.
 */

export interface MeterSeries {
  label: string;
  group: Record<string, string>;
  /** One value per window of the range, in order; '0' where the group had none. */
  values: string[];
}

export interface MeterChart {
  /** Window starts, epoch ms, in order. */
  windows: number[];
  series: MeterSeries[];
  /** Groups past the top that are folded into an "other" series, or left out when they cannot be. */
  other: { groups: number; folded: boolean };
}

const labelOf = (group: Record<string, string>, keys: readonly string[]) =>
  keys.length === 0 ? 'total' : keys.map((k) => `${k}=${group[k] === '' ? '(none)' : group[k]}`).join(', ');

/** Adds decimal strings exactly while they are whole numbers (64-bit sums pass 2^53). */
function add(a: string, b: string): string {
  return /^-?\d+$/.test(a) && /^-?\d+$/.test(b) ? (BigInt(a) + BigInt(b)).toString() : String(Number(a) + Number(b));
}

const larger = (a: string, b: string) => (Number(b) > Number(a) ? b : a);

export function meterChart(
  rows: readonly MeterUsageRow[],
  o: { aggregation: MeterAggregation; groupBy: readonly string[]; from: number; to: number; step: number; top: number },
): MeterChart {
  const windows: number[] = [];
  for (let t = o.from; t < o.to; t += o.step) windows.push(t);
  const slot = new Map(windows.map((t, i) => [t, i]));
  const groups = new Map<string, { group: Record<string, string>; values: string[]; rank: number }>();
  for (const r of rows) {
    const i = slot.get(r.startMs);
    if (i === undefined) continue;
    const key = JSON.stringify(o.groupBy.map((k) => r.group[k] ?? ''));
    let g = groups.get(key);
    if (g === undefined) groups.set(key, (g = { group: r.group, values: windows.map(() => '0'), rank: 0 }));
    g.values[i] = r.value;
    // Ranking only orders groups; a double is precise enough for that.
    g.rank += Number(r.value);
  }
  const ranked = [...groups.values()].sort((a, b) => b.rank - a.rank);
  const shown = ranked.slice(0, o.top);
  const rest = ranked.slice(o.top);
  const series: MeterSeries[] = shown.map((g) => ({
    label: labelOf(g.group, o.groupBy),
    group: g.group,
    values: g.values,
  }));
  const combine = o.aggregation === 'sum' || o.aggregation === 'count' ? add : o.aggregation === 'max' ? larger : null;
  if (rest.length > 0 && combine !== null)
    series.push({
      label: 'other',
      group: {},
      values: windows.map((_, i) => rest.map((g) => g.values[i]!).reduce(combine)),
    });
  return { windows, series, other: { groups: rest.length, folded: rest.length > 0 && combine !== null } };
}
