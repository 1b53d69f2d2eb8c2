/**
 * Literal and identifier helpers. ClickHouse 18.16 has no server-side query parameters
 * (`{name:Type}` fails there), so values reach SQL as literals: these two functions are the only
 * way a value may enter a query string, and sql.test.ts pins their behaviour.
 */
const IDENT = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;

/** A whitelisted identifier (database, table or column name). Throws on anything else. */
export function ident(name: string): string {
  if (!IDENT.test(name)) throw new TypeError(`not a safe ClickHouse identifier: ${JSON.stringify(name)}`);
  return name;
}

/** A quoted string literal or a number literal. Backslash and quote are the only specials in a '…' literal. */
export function lit(value: string | number | bigint): string {
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new TypeError(`not a finite number: ${value}`);
    return String(value);
  }
  if (typeof value === 'bigint') return value.toString();
  // NUL is legal in ClickHouse strings but a literal with it is a common smuggling trick: escape it too.
  return `'${value.replace(/[\\'\0]/g, (c) => (c === '\0' ? '\\0' : `\\${c}`))}'`;
}

/** `YYYY-MM-DD hh:mm:ss` in UTC: the DateTime text both 18.16 and current servers parse. */
export function dateTimeLit(ms: number): string {
  return lit(toClickHouseDateTime(ms));
}

export function toClickHouseDateTime(ms: number): string {
  return new Date(ms).toISOString().slice(0, 19).replace('T', ' ');
}
