import type { ErrorCode } from '../errors/codes.js';
import { PROPERTY_KEY_RE, PROPERTY_LIMITS } from '../meters/definition.js';
import { parseRfc3339 } from './time.js';

/** A validated meter event, as docs/api.md defines it; times are epoch milliseconds. */
export interface MeterEvent {
  workspace_id: string;
  event_type: string;
  quantity: number;
  gmv_cents: number;
  currency: string;
  idempotency_key: string;
  occurred_at_ms: number;
  /**
   * The event's string properties (docs/api.md), as parallel key and value arrays in the order
   * sent: the `events` columns they are stored in. Undefined when the event carried none, so the
   * common event allocates nothing for them.
   */
  prop_keys?: string[];
  prop_values?: string[];
}

/** An accepted event as stored (spool, ClickHouse) and as returned to the client. */
export interface StoredEvent extends MeterEvent {
  id: string;
  received_at_ms: number;
}

/** Why one event was refused. A class, not a thrown error: batches reject per event, cheaply. */
export class Rejection {
  constructor(
    readonly code: ErrorCode,
    readonly message: string,
    readonly field?: string,
  ) {}
}

/** Stripe meters refuse events older than 35 days or more than 5 minutes ahead; so does meterd. */
export const MAX_EVENT_AGE_MS = 35 * 24 * 3600_000;
export const MAX_EVENT_SKEW_MS = 5 * 60_000;
export const LIMITS = Object.freeze({ eventTypeMax: 100, idempotencyKeyMax: 255, workspaceIdMax: 64 });

const FIELDS = new Set([
  'workspace_id',
  'event_type',
  'quantity',
  'gmv_cents',
  'currency',
  'idempotency_key',
  'occurred_at',
  'properties',
]);
// No ':' in event types: the dedupe key joins event type and idempotency key with ':'.
const EVENT_TYPE_RE = /^[A-Za-z0-9_.-]{1,100}$/;
const WORKSPACE_ID_RE = /^ws_[A-Za-z0-9]{1,61}$/;
// eslint-disable-next-line no-control-regex -- control characters are what this pattern refuses
const CONTROL_RE = /[\u0000-\u001f\u007f]/;
// Built once: ICU's list of ISO 4217 codes shipped with Node.
const CURRENCIES = new Set(Intl.supportedValuesOf('currency'));

/**
 * Validates one decoded JSON value against the meter event contract. Unknown fields are refused
 * (`unknown_field`) so that a misspelt `gmv_cent` cannot silently bill zero.
 */
export function validateMeterEvent(v: unknown, nowMs: number): MeterEvent | Rejection {
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    return new Rejection('invalid_body', 'an event must be a JSON object');
  const o = v as Record<string, unknown>;
  for (const k in o)
    if (!FIELDS.has(k)) return new Rejection('unknown_field', `unknown field "${k.slice(0, 64)}"`, k.slice(0, 64));

  const ws = o.workspace_id;
  if (ws === undefined) return new Rejection('missing_field', 'workspace_id is required', 'workspace_id');
  if (typeof ws !== 'string' || !WORKSPACE_ID_RE.test(ws))
    return new Rejection('invalid_field', 'workspace_id must be a workspace id like ws_…', 'workspace_id');

  const et = o.event_type;
  if (et === undefined) return new Rejection('missing_field', 'event_type is required', 'event_type');
  if (typeof et !== 'string' || !EVENT_TYPE_RE.test(et)) {
    return new Rejection(
      'invalid_field',
      'event_type must be 1–100 characters of letters, digits, ".", "_" or "-"',
      'event_type',
    );
  }

  const ik = o.idempotency_key;
  if (ik === undefined) return new Rejection('missing_field', 'idempotency_key is required', 'idempotency_key');
  // isWellFormed: a lone surrogate has no UTF-8 form. Redis would store it as U+FFFD (so two keys
  // would collide) and ClickHouse refuses the row (so shipping would stall).
  if (
    typeof ik !== 'string' ||
    ik.length === 0 ||
    ik.length > LIMITS.idempotencyKeyMax ||
    CONTROL_RE.test(ik) ||
    !ik.isWellFormed()
  ) {
    return new Rejection(
      'invalid_field',
      'idempotency_key must be a string of 1–255 characters without control characters or unpaired surrogates',
      'idempotency_key',
    );
  }

  const quantity = o.quantity === undefined ? 1 : o.quantity;
  const q = checkInteger(quantity, 'quantity');
  if (q !== undefined) return q;
  const gmv = o.gmv_cents === undefined ? 0 : o.gmv_cents;
  const g = checkInteger(gmv, 'gmv_cents');
  if (g !== undefined) return g;

  let currency = 'USD';
  if (o.currency !== undefined) {
    if (typeof o.currency !== 'string' || o.currency.length !== 3)
      return new Rejection('invalid_currency', 'currency must be a 3-letter ISO 4217 code', 'currency');
    currency = o.currency.toUpperCase();
    if (!CURRENCIES.has(currency))
      return new Rejection(
        'invalid_currency',
        `currency ${JSON.stringify(o.currency)} is not an ISO 4217 code`,
        'currency',
      );
  }

  let occurred = nowMs;
  if (o.occurred_at !== undefined) {
    if (typeof o.occurred_at !== 'string')
      return new Rejection('invalid_timestamp', 'occurred_at must be an RFC 3339 string', 'occurred_at');
    occurred = parseRfc3339(o.occurred_at);
    if (Number.isNaN(occurred))
      return new Rejection(
        'invalid_timestamp',
        'occurred_at must be an RFC 3339 date-time like 2026-04-18T12:34:56Z',
        'occurred_at',
      );
    if (occurred < nowMs - MAX_EVENT_AGE_MS || occurred > nowMs + MAX_EVENT_SKEW_MS) {
      return new Rejection(
        'timestamp_out_of_window',
        'occurred_at must be within the last 35 days and at most 5 minutes ahead',
        'occurred_at',
      );
    }
  }

  const ev: MeterEvent = {
    workspace_id: ws,
    event_type: et,
    quantity: quantity as number,
    gmv_cents: gmv as number,
    currency,
    idempotency_key: ik,
    occurred_at_ms: occurred,
  };
  if (o.properties !== undefined) {
    const p = checkProperties(o.properties, ev);
    if (p !== undefined) return p;
  }
  return ev;
}

/**
 * `properties`: a flat object of at most 16 string values (keys like event types, values up to 256
 * characters without control characters or unpaired surrogates, the same text rule as
 * idempotency_key). Sets the event's parallel key/value arrays; a bad entry is refused naming it.
 */
function checkProperties(p: unknown, ev: MeterEvent): Rejection | undefined {
  if (typeof p !== 'object' || p === null || Array.isArray(p))
    return new Rejection('invalid_field', 'properties must be an object of string values', 'properties');
  const keys: string[] = [];
  const values: string[] = [];
  for (const k in p) {
    if (keys.length === PROPERTY_LIMITS.maxKeys)
      return new Rejection('invalid_field', `properties holds more than ${PROPERTY_LIMITS.maxKeys} keys`, 'properties');
    if (!PROPERTY_KEY_RE.test(k))
      return new Rejection(
        'invalid_field',
        `property key ${JSON.stringify(k.slice(0, 64))} must be 1–64 characters of letters, digits, ".", "_" or "-"`,
        'properties',
      );
    const v = (p as Record<string, unknown>)[k];
    if (typeof v !== 'string' || v.length > PROPERTY_LIMITS.valueMax || CONTROL_RE.test(v) || !v.isWellFormed())
      return new Rejection(
        'invalid_field',
        `properties.${k} must be a string of at most ${PROPERTY_LIMITS.valueMax} characters without control characters or unpaired surrogates`,
        `properties.${k}`,
      );
    keys.push(k);
    values.push(v);
  }
  if (keys.length > 0) {
    ev.prop_keys = keys;
    ev.prop_values = values;
  }
  return undefined;
}

function checkInteger(v: unknown, field: string): Rejection | undefined {
  if (typeof v !== 'number') {
    const written =
      typeof v === 'string' && v.startsWith(NOT_AN_INTEGER) ? ` (got ${v.slice(NOT_AN_INTEGER.length, 40)})` : '';
    return new Rejection(
      'invalid_field',
      `${field} must be a whole number written without fraction or exponent${written}`,
      field,
    );
  }
  // JSON.parse has already rounded anything past ±(2^53−1), so such a value can't be trusted: refuse it.
  // Negative values are refunds and credits (the API's fields are i64, docs/api.md; Stripe meters sum them too).
  if (!Number.isSafeInteger(v)) {
    return new Rejection(
      'integer_out_of_range',
      `${field} must be a whole number from -9007199254740991 to 9007199254740991`,
      field,
    );
  }
  return undefined;
}

/**
 * JSON.parse rounds silently: `4299.0000000000001` becomes 4299 and `1e2` becomes 100. meterd has no
 * field that takes a non-integer number, so before parsing, every number token written with a
 * fraction or an exponent is turned into a marked string, which validation then refuses for that
 * event alone. The native regex test keeps the common body (no such token) on the fast path.
 */
const NOT_AN_INTEGER = '\u0000non-integer:';
const MAYBE_NON_INTEGER = /\d[.eE]/;
const STRING_OR_NUMBER = /"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/g;

export function parseMeterJson(text: string): unknown {
  if (!MAYBE_NON_INTEGER.test(text)) return JSON.parse(text);
  return JSON.parse(
    text.replace(STRING_OR_NUMBER, (tok) =>
      tok.charCodeAt(0) === 34 || !/[.eE]/.test(tok) ? tok : JSON.stringify(NOT_AN_INTEGER + tok),
    ),
  );
}
