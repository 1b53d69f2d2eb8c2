import type { EventRow } from './batches.js';

/**
 * The `events` columns ingest ships, in RowBinary order (`ver` is MATERIALIZED and never sent).
 * Types as in infra/clickhouse/004_events_time_key.sql and 006_meters.sql: String ×4, Int64 ×2,
 * String, DateTime('UTC') ×2, Array(String) ×2 — all of which 18.16's RowBinary reads (String:
 * varint length + bytes; Int64: 8 bytes little-endian; DateTime: UInt32 seconds little-endian;
 * Array: varint count + elements).
 */
export const EVENT_ROW_BINARY_COLUMNS = [
  'workspace_id',
  'event_type',
  'idempotency_key',
  'event_id',
  'quantity',
  'gmv_cents',
  'currency',
  'occurred_at',
  'received_at',
  'prop_keys',
  'prop_values',
] as const;

const TWO_32 = 2 ** 32;

/**
 * Encodes spool rows as one RowBinary body. ClickHouse parses it with far less work than
 * JSONEachRow (no field names, no number or date text; bench/micro/insert-format.ts measures it),
 * and the shipper already holds the parsed rows for its batch record. Integers must be safe
 * (ingest's validation bounds them to ±(2^53 − 1)); DateTimes are the spool's `YYYY-MM-DD hh:mm:ss` UTC.
 */
export function eventRowsToRowBinary(rows: readonly EventRow[]): Buffer {
  let size = 0;
  for (const r of rows) {
    size += strSize(r.workspace_id) + strSize(r.event_type) + strSize(r.idempotency_key) + strSize(r.event_id);
    size += 16 + strSize(r.currency) + 8;
    size += r.prop_keys === undefined ? 2 : arraySize(r.prop_keys) + arraySize(r.prop_values!);
  }
  const buf = Buffer.allocUnsafe(size);
  let o = 0;
  for (const r of rows) {
    o = writeStr(buf, o, r.workspace_id);
    o = writeStr(buf, o, r.event_type);
    o = writeStr(buf, o, r.idempotency_key);
    o = writeStr(buf, o, r.event_id);
    o = writeInt64(buf, o, r.quantity);
    o = writeInt64(buf, o, r.gmv_cents);
    o = writeStr(buf, o, r.currency);
    o = buf.writeUInt32LE(dateTimeSeconds(r.occurred_at), o);
    o = buf.writeUInt32LE(dateTimeSeconds(r.received_at), o);
    if (r.prop_keys === undefined) {
      // Two empty arrays: a zero count each.
      buf[o++] = 0;
      buf[o++] = 0;
    } else {
      o = writeArray(buf, o, r.prop_keys);
      o = writeArray(buf, o, r.prop_values!);
    }
  }
  return buf;
}

function arraySize(a: readonly string[]): number {
  let size = varintSize(a.length);
  for (const s of a) size += strSize(s);
  return size;
}

function writeArray(buf: Buffer, o: number, a: readonly string[]): number {
  o = writeVarint(buf, o, a.length);
  for (const s of a) o = writeStr(buf, o, s);
  return o;
}

function strSize(s: string): number {
  const n = Buffer.byteLength(s, 'utf8');
  return varintSize(n) + n;
}

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

function writeVarint(buf: Buffer, o: number, n: number): number {
  while (n >= 0x80) {
    buf[o++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  buf[o++] = n;
  return o;
}

function writeStr(buf: Buffer, o: number, s: string): number {
  o = writeVarint(buf, o, Buffer.byteLength(s, 'utf8'));
  return o + buf.write(s, o, 'utf8');
}

function writeInt64(buf: Buffer, o: number, v: number): number {
  if (!Number.isSafeInteger(v)) throw new RangeError(`not a safe integer for Int64: ${v}`);
  // Two's complement from two 32-bit halves: exact for every safe integer, negatives included.
  const hi = Math.floor(v / TWO_32);
  buf.writeUInt32LE(v - hi * TWO_32, o);
  buf.writeInt32LE(hi, o + 4);
  return o + 8;
}

let lastText = '';
let lastSeconds = 0;

/** Seconds of a `YYYY-MM-DD hh:mm:ss` UTC text; rows of a batch mostly share their second. */
function dateTimeSeconds(t: string): number {
  if (t === lastText) return lastSeconds;
  const ms = Date.UTC(
    Number(t.slice(0, 4)),
    Number(t.slice(5, 7)) - 1,
    Number(t.slice(8, 10)),
    Number(t.slice(11, 13)),
    Number(t.slice(14, 16)),
    Number(t.slice(17, 19)),
  );
  if (t.length !== 19 || !Number.isFinite(ms) || ms < 0 || ms >= TWO_32 * 1000) {
    throw new RangeError(`not a DateTime('UTC') text: ${JSON.stringify(t)}`);
  }
  lastText = t;
  lastSeconds = ms / 1000;
  return lastSeconds;
}
