import { lit } from '../clickhouse/sql.js';
import type { MeterDefinition } from './definition.js';

/**
 * What a meter takes from one event, written twice side by side: in JS (ingest's batch partials) and
 * in SQL (the aggregator's exact recompute of closed hours and the backfill). Both must agree.
 *
 * - count: no value (`events` is the count; nothing is skipped).
 * - sum, max, latest: an integer. `quantity` and `gmv_cents` are integers already; a property must be
 *   a decimal integer of at most 18 digits (always within Int64; no fraction, exponent, sign `+` or
 *   spaces). Any other property value, or an absent one, is skipped and counted in `skipped`: never
 *   billed as 0 and never rounded.
 * - unique_count: the value as text (a property present on the event, or the integer's decimal
 *   form); an event without the property is skipped and counted.
 * - `currency` splits a meter over gmv_cents (amounts of different currencies are never added);
 *   '' for every other meter. Group values are the group_by properties' values ('' when absent).
 */
export const METER_INTEGER_PATTERN = '^-?[0-9]{1,18}$';
const INTEGER_RE = new RegExp(METER_INTEGER_PATTERN);

/** The fields of an event a meter reads (an `events` row). */
export interface MeterInput {
  event_type: string;
  quantity: number;
  gmv_cents: number;
  currency: string;
  prop_keys?: readonly string[];
  prop_values?: readonly string[];
}

export function propertyOf(r: MeterInput, key: string): string | undefined {
  const i = r.prop_keys === undefined ? -1 : r.prop_keys.indexOf(key);
  return i === -1 ? undefined : r.prop_values![i];
}

export interface MeterValue {
  /** A usable value (sum/max/latest: `num`; unique_count: `text`). */
  ok: boolean;
  num: bigint;
  text: string;
}

const NONE: MeterValue = Object.freeze({ ok: false, num: 0n, text: '' });

/** The event's value for the meter (count meters: never ok, never skipped). */
export function meterValue(m: MeterDefinition, r: MeterInput): MeterValue {
  if (m.aggregation === 'count' || m.value_field === null) return NONE;
  let raw: string | undefined;
  if (m.value_field === 'quantity') raw = String(r.quantity);
  else if (m.value_field === 'gmv_cents') raw = String(r.gmv_cents);
  else raw = propertyOf(r, m.value_field.slice('properties.'.length));
  if (raw === undefined) return NONE;
  if (m.aggregation === 'unique_count') return { ok: true, num: 0n, text: raw };
  return INTEGER_RE.test(raw) ? { ok: true, num: BigInt(raw), text: '' } : NONE;
}

const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * A property's text as a meter integer: what `INTEGER_RE.test(raw) ? BigInt(raw) : undefined` gives,
 * without the regex and, below 2^53, without the BigInt: a Number when the value is a safe integer
 * (every value of at most 15 digits is), a BigInt otherwise. Measured by bench/micro/meters.ts:
 * the regex and a BigInt per value and meter were most of meterPartials' CPU with the bench's meters.
 */
export function meterInteger(raw: string): number | bigint | undefined {
  const n = raw.length;
  const neg = n > 0 && raw.charCodeAt(0) === 45;
  const digits = neg ? n - 1 : n;
  if (digits < 1 || digits > 18) return undefined;
  let v = 0;
  for (let i = neg ? 1 : 0; i < n; i++) {
    const d = raw.charCodeAt(i) - 48;
    if (d < 0 || d > 9) return undefined;
    v = v * 10 + d;
  }
  // Up to 15 digits every step is below 2^53, so v is exact.
  if (digits <= 15) return neg ? -v : v;
  const b = BigInt(raw);
  return b >= -SAFE && b <= SAFE ? Number(b) : b;
}

/**
 * The integer meterValue takes from a quantity or gmv_cents column: the number itself when it is a
 * safe integer (its String() is then its exact decimal form), else the rule on its String().
 */
export function meterColumnInteger(x: number): number | bigint | undefined {
  return Number.isSafeInteger(x) ? x : meterInteger(String(x));
}

export function meterCurrency(m: MeterDefinition, r: MeterInput): string {
  return m.value_field === 'gmv_cents' ? r.currency : '';
}

export function meterGroup(m: MeterDefinition, r: MeterInput): string[] {
  return m.group_by.map((k) => propertyOf(r, k) ?? '');
}

/**
 * The same rule over a winner row with columns q (quantity), g (gmv_cents), c (currency), pk/pv
 * (property keys and values): SQL expressions for the numeric value `v` (Int64), `ok`, the text
 * `us` (unique_count), `skip`, the currency and the group values (Array(String)).
 */
export function meterValueSql(m: MeterDefinition): {
  v: string;
  ok: string;
  us: string;
  skip: string;
  cur: string;
  gv: string;
} {
  const prop = (k: string): string => `pv[indexOf(pk, ${lit(k)})]`;
  const cur = m.value_field === 'gmv_cents' ? 'c' : "''";
  const gv = m.group_by.length === 0 ? 'emptyArrayString()' : `[${m.group_by.map(prop).join(', ')}]`;
  if (m.aggregation === 'count' || m.value_field === null)
    return { v: 'toInt64(0)', ok: '0', us: "''", skip: '0', cur, gv };
  let raw: string;
  let present = '1';
  if (m.value_field === 'quantity') raw = 'toString(q)';
  else if (m.value_field === 'gmv_cents') raw = 'toString(g)';
  else {
    const k = m.value_field.slice('properties.'.length);
    raw = prop(k);
    present = `has(pk, ${lit(k)})`;
  }
  if (m.aggregation === 'unique_count')
    return { v: 'toInt64(0)', ok: present, us: raw, skip: `NOT (${present})`, cur, gv };
  const ok = `(${present} AND match(${raw}, ${lit(METER_INTEGER_PATTERN)}))`;
  return { v: `toInt64OrZero(${raw})`, ok, us: "''", skip: `NOT ${ok}`, cur, gv };
}
