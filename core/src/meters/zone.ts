import { ApiError } from '../errors/api-error.js';
import type { MeterWindow } from './usage-types.js';

const HOUR = 3_600_000;

/**
 * Window boundaries in an IANA time zone, as UTC epoch ms: `[b0, b1, …, bn]`, b0 the start of the
 * window holding `fromMs`, bn the end of the window holding `toMs - 1`. Meter rollups are hourly,
 * so a boundary must fall on a UTC hour: a zone whose offset is not a whole number of hours
 * (Asia/Kolkata, Asia/Kathmandu, Australia/Adelaide…) is refused naming `tz` rather than answered
 * with windows cut an half hour off. A day starts at the zone's local midnight (where a DST change
 * skips midnight, at the first local time of the day); a month on its 1st.
 */
export function windowBoundaries(
  window: MeterWindow,
  tz: string,
  fromMs: number,
  toMs: number,
  maxWindows: number,
): number[] {
  const local = zoneParts(tz);
  const startOf = (ms: number): number => {
    if (window === 'hour') return Math.floor(ms / HOUR) * HOUR;
    const p = local(ms);
    return zoneMidnight(local, p.y, p.m, window === 'day' ? p.d : 1);
  };
  const next = (start: number): number => {
    if (window === 'hour') return start + HOUR;
    // Noon of the window's first day, in local fields: safe from DST edges around midnight.
    const p = local(start + 12 * HOUR);
    return window === 'day' ? zoneMidnight(local, p.y, p.m, p.d + 1) : zoneMidnight(local, p.y, p.m + 1, 1);
  };
  const out = [startOf(fromMs)];
  while (out[out.length - 1]! < toMs) {
    if (out.length > maxWindows)
      throw new ApiError('invalid_field', `at most ${maxWindows} windows per request; narrow from/to`, 'from');
    out.push(next(out[out.length - 1]!));
  }
  if (out.length === 1) out.push(next(out[0]!));
  for (const b of out)
    if (b % HOUR !== 0)
      throw new ApiError(
        'invalid_field',
        `${tz} cuts ${window} windows off the hour; meters are rolled up by the hour, so a zone whose offset is not whole hours is not supported`,
        'tz',
      );
  return out;
}

interface Parts {
  y: number;
  m: number;
  d: number;
  h: number;
  min: number;
  s: number;
}

/** Throws 400 naming `tz` when the zone is not an IANA name this runtime knows. */
export function zoneParts(tz: string): (ms: number) => Parts {
  let f: Intl.DateTimeFormat;
  try {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: tz,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
  } catch (err) {
    throw new ApiError('invalid_field', `tz must be an IANA time zone name like Europe/Paris`, 'tz', { cause: err });
  }
  return (ms) => {
    const p: Record<string, number> = {};
    for (const x of f.formatToParts(ms)) if (x.type !== 'literal') p[x.type] = Number(x.value);
    return { y: p.year!, m: p.month!, d: p.day!, h: p.hour!, min: p.minute!, s: p.second! };
  };
}

/** The UTC instant of local midnight of (y, m, d) (fields may overflow: d + 1, m + 1). */
function zoneMidnight(local: (ms: number) => Parts, y: number, m: number, d: number): number {
  const wall = Date.UTC(y, m - 1, d);
  const offsetAt = (ms: number): number => {
    const p = local(ms);
    return Date.UTC(p.y, p.m - 1, p.d, p.h, p.min, p.s) - Math.floor(ms / 1000) * 1000;
  };
  // Two rounds: the offset at the guess is the offset at midnight unless a DST change lies between.
  const guess = wall - offsetAt(wall);
  const at = wall - offsetAt(guess);
  // A day whose midnight does not exist (DST forward at 00:00) starts at its first local time.
  const p = local(at);
  return Date.UTC(p.y, p.m - 1, p.d) <
    Date.UTC(new Date(wall).getUTCFullYear(), new Date(wall).getUTCMonth(), new Date(wall).getUTCDate())
    ? at + HOUR
    : at;
}
