/**
 * RFC 3339 date-time parsing. Date.parse is too lenient for money (it accepts 2026-02-30 and
 * rolls it into March, and many non-RFC forms), so the fields are checked one by one.
 * Returns epoch milliseconds (fraction truncated to ms), or NaN when the text is not RFC 3339.
 */
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

export function parseRfc3339(s: string): number {
  const m = RFC3339.exec(s);
  if (m === null) return NaN;
  const year = +m[1]!,
    month = +m[2]!,
    day = +m[3]!,
    hour = +m[4]!,
    minute = +m[5]!,
    second = +m[6]!;
  if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59) return NaN;
  if (day > daysInMonth(year, month)) return NaN;
  const ms = m[7] === undefined ? 0 : +m[7].slice(0, 3).padEnd(3, '0');
  let t = Date.UTC(year, month - 1, day, hour, minute, second, ms);
  if (m[8] === undefined) {
    const offH = +m[10]!,
      offM = +m[11]!;
    if (offH > 23 || offM > 59) return NaN;
    const off = (offH * 60 + offM) * 60_000;
    t += m[9] === '+' ? -off : off;
  }
  return t;
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

/** Seconds precision, `Z` suffix: how meterd writes every time it returns. */
export function formatRfc3339(ms: number): string {
  return new Date(ms).toISOString().slice(0, 19) + 'Z';
}
