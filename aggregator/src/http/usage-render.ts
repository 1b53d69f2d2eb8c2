import { formatRfc3339 } from '@meterd/core/event';
import { currencyExponent } from '@meterd/core/money';
import { bucketEnd } from '../rollups/granularity.js';
import type { RollupRow } from '../rollups/read.js';
import type { Freshness } from '../rollups/freshness.js';
import type { UsageQuery } from './usage-query.js';

/**
 * Bodies of the usage API. Amounts (`gmv_cents`) are whole ISO 4217 minor units of `currency`;
 * `currency_exponent` says how many decimals that unit has (JPY 0, USD 2, KWD 3). 64-bit totals are written as exact JSON integers from ClickHouse's
 * decimal text: no value passes through a double. Clients whose JSON parser uses doubles should
 * read totals beyond 2^53−1 with a big-number aware parser (or use the CSV).
 */
export function usageJson(q: UsageQuery, rows: readonly RollupRow[], f: Freshness, targetMs: number): string {
  const totals = new Map<
    string,
    { event_type: string; currency: string; events: bigint; quantity: bigint; gmv: bigint; late: bigint }
  >();
  for (const r of rows) {
    const k = `${r.event_type}\u0000${r.currency}`;
    const t = totals.get(k) ?? {
      event_type: r.event_type,
      currency: r.currency,
      events: 0n,
      quantity: 0n,
      gmv: 0n,
      late: 0n,
    };
    t.events += BigInt(r.events);
    t.quantity += BigInt(r.quantity);
    t.gmv += BigInt(r.gmv_cents);
    t.late += BigInt(r.late_events);
    totals.set(k, t);
  }
  const data = rows.map(
    (r) =>
      `{"window_start":"${formatRfc3339(r.window_start)}","window_end":"${formatRfc3339(bucketEnd(q.granularity, r.window_start))}",` +
      `"event_type":${JSON.stringify(r.event_type)},"currency":${JSON.stringify(r.currency)},"events":${r.events},"quantity":${r.quantity},` +
      `"gmv_cents":${r.gmv_cents},"first_event_at":"${formatRfc3339(r.first_event_at)}","last_event_at":"${formatRfc3339(r.last_event_at)}",` +
      `"late_events":${r.late_events},"version":${r.version},"computed_at":"${formatRfc3339(r.computed_at)}","currency_exponent":${currencyExponent(r.currency)}}`,
  );
  const sums = [...totals.values()].map(
    (t) =>
      `{"event_type":${JSON.stringify(t.event_type)},"currency":${JSON.stringify(t.currency)},"events":${t.events},"quantity":${t.quantity},"gmv_cents":${t.gmv},"late_events":${t.late},"currency_exponent":${currencyExponent(t.currency)}}`,
  );
  return (
    `{"object":"usage_summary","workspace_id":${JSON.stringify(q.workspaceId)},"granularity":"${q.granularity}",` +
    `"from":"${formatRfc3339(q.from)}","to":"${formatRfc3339(q.to)}","event_type":${q.eventType === undefined ? 'null' : JSON.stringify(q.eventType)},` +
    `"freshness":${freshnessJson(f, targetMs)},"totals":[${sums.join(',')}],"data":[${data.join(',')}]}`
  );
}

function freshnessJson(f: Freshness, targetMs: number): string {
  return `{"as_of":${f.asOfMs === null ? 'null' : `"${new Date(f.asOfMs).toISOString()}"`},"lag_ms":${f.lagMs ?? 'null'},"target_ms":${targetMs}}`;
}

export const CSV_HEADER =
  'window_start,window_end,event_type,currency,events,quantity,gmv_cents,first_event_at,last_event_at,late_events,version,computed_at,currency_exponent';

/** The same rows as CSV (RFC 4180) for spreadsheets; freshness travels in response headers. */
export function usageCsv(q: UsageQuery, rows: readonly RollupRow[]): string {
  let out = CSV_HEADER + '\r\n';
  for (const r of rows) {
    out +=
      [
        formatRfc3339(r.window_start),
        formatRfc3339(bucketEnd(q.granularity, r.window_start)),
        csvField(r.event_type),
        csvField(r.currency),
        r.events,
        r.quantity,
        r.gmv_cents,
        formatRfc3339(r.first_event_at),
        formatRfc3339(r.last_event_at),
        r.late_events,
        r.version,
        formatRfc3339(r.computed_at),
        currencyExponent(r.currency),
      ].join(',') + '\r\n';
  }
  return out;
}

/** Quotes when needed, and defuses spreadsheet formulas (a leading = + - @ is prefixed with '). */
export function csvField(s: string): string {
  const v = /^[=+\-@]/.test(s) ? `'${s}` : s;
  return /[",\r\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v;
}
