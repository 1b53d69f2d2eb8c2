import { ApiError } from '@meterd/core/errors';
import { parseRfc3339 } from '@meterd/core/event';
import { GRANULARITIES, bucketStart, bucketEnd, type Granularity } from '../rollups/granularity.js';

export interface UsageQuery {
  workspaceId: string;
  granularity: Granularity;
  from: number;
  to: number;
  eventType: string | undefined;
  format: 'json' | 'csv';
}

const PARAMS = new Set(['from', 'to', 'granularity', 'event_type', 'format']);
const EVENT_TYPE_RE = /^[A-Za-z0-9_.-]{1,100}$/;
const WORKSPACE_ID_RE = /^ws_[A-Za-z0-9]{1,61}$/;
/** Most buckets one request may span (31 days of hours, ~5 years of days): bounds the response. */
export const MAX_BUCKETS = 2_000;
const DEFAULT_SPAN: Record<Granularity, number> = { hour: 24, day: 31, month: 12 };

/**
 * Parses `GET /api/v1/workspaces/:id/usage` parameters. `from` and `to` are RFC 3339; they are
 * widened to whole buckets so that a partial bucket is never returned as if it were complete.
 * Defaults: granularity=day, to=now, from = `to` minus 24 hours / 31 days / 12 months.
 * Unknown parameters are rejected so that a typo (`granularty=`) never silently changes the answer.
 */
export function parseUsageQuery(
  workspaceId: string,
  params: URLSearchParams,
  accept: string,
  now: number,
): UsageQuery | ApiError {
  if (!WORKSPACE_ID_RE.test(workspaceId))
    return new ApiError('invalid_field', 'the path must name a workspace id like ws_…', 'workspace_id');
  for (const k of params.keys())
    if (!PARAMS.has(k))
      return new ApiError('unknown_field', `unknown query parameter "${k.slice(0, 64)}"`, k.slice(0, 64));
  for (const k of PARAMS)
    if (params.getAll(k).length > 1) return new ApiError('invalid_field', `${k} is given more than once`, k);

  const g = params.get('granularity') ?? 'day';
  if (!(GRANULARITIES as readonly string[]).includes(g))
    return new ApiError('invalid_field', 'granularity must be hour, day or month', 'granularity');
  const granularity = g as Granularity;

  const fmt = params.get('format');
  if (fmt !== null && fmt !== 'json' && fmt !== 'csv')
    return new ApiError('invalid_field', 'format must be json or csv', 'format');
  const format = fmt ?? (/\btext\/csv\b/i.test(accept) ? 'csv' : 'json');

  const et = params.get('event_type');
  if (et !== null && !EVENT_TYPE_RE.test(et))
    return new ApiError(
      'invalid_field',
      'event_type must be 1–100 characters of letters, digits, ".", "_" or "-"',
      'event_type',
    );

  const toText = params.get('to');
  const toRaw = toText === null ? now : parseRfc3339(toText);
  if (Number.isNaN(toRaw)) return new ApiError('invalid_timestamp', 'to must be an RFC 3339 date-time', 'to');
  const fromText = params.get('from');
  const fromRaw = fromText === null ? defaultFrom(granularity, toRaw) : parseRfc3339(fromText);
  if (Number.isNaN(fromRaw)) return new ApiError('invalid_timestamp', 'from must be an RFC 3339 date-time', 'from');
  if (fromRaw >= toRaw) return new ApiError('invalid_field', 'from must be before to', 'from');

  const from = bucketStart(granularity, fromRaw);
  const lastStart = bucketStart(granularity, toRaw - 1);
  const to = bucketEnd(granularity, lastStart);
  if (countBuckets(granularity, from, to) > MAX_BUCKETS) {
    return new ApiError(
      'invalid_field',
      `the range spans more than ${MAX_BUCKETS} ${granularity} buckets; narrow it or use a coarser granularity`,
      'from',
    );
  }
  return { workspaceId, granularity, from, to, eventType: et ?? undefined, format };
}

function defaultFrom(g: Granularity, to: number): number {
  if (g !== 'month') return to - DEFAULT_SPAN[g] * (g === 'hour' ? 3_600_000 : 86_400_000);
  const d = new Date(to);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() - DEFAULT_SPAN.month, d.getUTCDate(), d.getUTCHours());
}

function countBuckets(g: Granularity, from: number, to: number): number {
  if (g === 'hour') return (to - from) / 3_600_000;
  if (g === 'day') return (to - from) / 86_400_000;
  const a = new Date(from);
  const b = new Date(to);
  return (b.getUTCFullYear() - a.getUTCFullYear()) * 12 + b.getUTCMonth() - a.getUTCMonth();
}
