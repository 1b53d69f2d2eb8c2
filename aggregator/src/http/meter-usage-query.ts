import { ApiError } from '@meterd/core/errors';
import { parseRfc3339 } from '@meterd/core/event';
import { METER_SLUG_RE, METER_WINDOWS, PROPERTY_KEY_RE, type MeterWindow } from '@meterd/core/meters';

export interface MeterUsageParams {
  slug: string;
  window: MeterWindow;
  fromMs: number;
  toMs: number;
  tz: string;
  groupBy: string[];
  filter: Record<string, string>;
  format: 'json' | 'csv';
}

const PARAMS = new Set(['from', 'to', 'window', 'group_by', 'tz', 'format']);
const FILTER_RE = /^filter\[(.*)\]$/;
const DEFAULT_SPAN_MS: Record<MeterWindow, number> = {
  hour: 24 * 3_600_000,
  day: 31 * 86_400_000,
  month: 365 * 86_400_000,
};

/**
 * Parses `GET /api/v1/workspaces/:id/meters/:slug/usage` parameters (docs/meters.md): `from`/`to`
 * RFC 3339 (defaults: to = now, from = 24 h / 31 days / 365 days before), `window` hour|day|month
 * (default day), `group_by` a comma list, `filter[prop]=value` (repeatable per property), `tz` an
 * IANA name (default UTC; checked with the windows, core's windowBoundaries), `format` json|csv
 * (or Accept: text/csv). Unknown parameters are refused naming them. Whether group_by and filter
 * name the meter's group_by properties is checked by readMeterUsage against the meter.
 */
export function parseMeterUsageQuery(
  slug: string,
  params: URLSearchParams,
  accept: string,
  now: number,
): MeterUsageParams | ApiError {
  if (!METER_SLUG_RE.test(slug)) return new ApiError('invalid_field', 'the path must name a meter slug', 'slug');
  const filter: Record<string, string> = {};
  for (const [k, v] of params) {
    const f = FILTER_RE.exec(k);
    if (f !== null) {
      const prop = f[1]!;
      if (!PROPERTY_KEY_RE.test(prop))
        return new ApiError('invalid_field', `filter[${prop.slice(0, 64)}] does not name a property`, k.slice(0, 80));
      if (prop in filter) return new ApiError('invalid_field', `${k} is given more than once`, k);
      if (v.length > 256) return new ApiError('invalid_field', `${k} is longer than 256 characters`, k);
      filter[prop] = v;
      continue;
    }
    if (!PARAMS.has(k))
      return new ApiError('unknown_field', `unknown query parameter "${k.slice(0, 64)}"`, k.slice(0, 64));
    if (params.getAll(k).length > 1) return new ApiError('invalid_field', `${k} is given more than once`, k);
  }
  const w = params.get('window') ?? 'day';
  if (!(METER_WINDOWS as readonly string[]).includes(w))
    return new ApiError('invalid_field', 'window must be hour, day or month', 'window');
  const window = w as MeterWindow;
  const fmt = params.get('format');
  if (fmt !== null && fmt !== 'json' && fmt !== 'csv')
    return new ApiError('invalid_field', 'format must be json or csv', 'format');
  const format = fmt ?? (/\btext\/csv\b/i.test(accept) ? 'csv' : 'json');
  const gb = params.get('group_by');
  const groupBy = gb === null || gb === '' ? [] : gb.split(',');
  for (const g of groupBy)
    if (!PROPERTY_KEY_RE.test(g))
      return new ApiError('invalid_field', 'group_by must be a comma list of properties', 'group_by');
  const tz = params.get('tz') ?? 'UTC';
  if (tz.length === 0 || tz.length > 64)
    return new ApiError('invalid_field', 'tz must be an IANA time zone name', 'tz');
  const toText = params.get('to');
  const toMs = toText === null ? now : parseRfc3339(toText);
  if (Number.isNaN(toMs)) return new ApiError('invalid_timestamp', 'to must be an RFC 3339 date-time', 'to');
  const fromText = params.get('from');
  const fromMs = fromText === null ? toMs - DEFAULT_SPAN_MS[window] : parseRfc3339(fromText);
  if (Number.isNaN(fromMs)) return new ApiError('invalid_timestamp', 'from must be an RFC 3339 date-time', 'from');
  if (fromMs >= toMs) return new ApiError('invalid_field', 'from must be before to', 'from');
  return { slug, window, fromMs, toMs, tz, groupBy, filter, format };
}
