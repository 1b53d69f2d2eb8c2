import { invalid, missingParam, notFound, StripeHttpError } from './stripe-error.js';
import { stripeId, type MeterEvent, type Meter, type StateData } from './state.js';

/**
 * The billing meter rules as Stripe documents them: identifiers unique within a rolling window
 * (a duplicate is refused with "An event already exists with identifier …" and
 * Stripe-Should-Retry: false), timestamps within the past 35 days and at most 5 minutes ahead,
 * values whole numbers, adjustments that cancel one event by identifier within 24 hours of its
 * receipt, and summaries over minute-aligned [start_time, end_time) ranges.
 */
const PAST_S = 35 * 86_400;
const FUTURE_S = 5 * 60;
const CANCEL_WINDOW_S = 24 * 3_600;
const MAX_LEN = 100;

export interface EventInput {
  event_name: unknown;
  payload: unknown;
  identifier: unknown;
  /** Epoch seconds (v1) or an ISO date-time (v2); absent means now. */
  timestamp: unknown;
}

export class Billing {
  constructor(private readonly data: () => StateData, private readonly identifierWindowS: number, private readonly changed: () => void) {}

  /** Validates one event the way v1 (synchronously) and the stream (asynchronously) do. */
  validate(e: EventInput, nowS: number, via: MeterEvent['via']): MeterEvent {
    if (e.event_name === undefined || e.event_name === '') throw missingParam('event_name');
    if (typeof e.event_name !== 'string' || e.event_name.length > MAX_LEN) throw invalid('event_name must be a string of at most 100 characters.', 'event_name');
    if (typeof e.payload !== 'object' || e.payload === null) throw missingParam('payload');
    const payload: Record<string, string> = {};
    for (const [k, v] of Object.entries(e.payload as Record<string, unknown>)) {
      if (typeof v !== 'string') throw invalid(`payload[${k}] must be a string.`, `payload[${k}]`);
      payload[k] = v;
    }
    let identifier: string;
    if (e.identifier === undefined || e.identifier === '') identifier = stripeId('mev');
    else if (typeof e.identifier !== 'string' || e.identifier.length > MAX_LEN) throw invalid('identifier must be a string of at most 100 characters.', 'identifier');
    else identifier = e.identifier;
    const timestamp = parseTimestamp(e.timestamp, nowS);
    if (timestamp < nowS - PAST_S || timestamp > nowS + FUTURE_S) {
      throw invalid('Timestamp must be within the past 35 calendar days or up to 5 minutes in the future.', 'timestamp', 'timestamp_outside_range');
    }
    const meter = this.meterForEvent(e.event_name);
    const customerKey = meter?.customer_mapping.event_payload_key ?? 'stripe_customer_id';
    const valueKey = meter?.value_settings.event_payload_key ?? 'value';
    if (payload[customerKey] === undefined) throw invalid(`Customer mapping key ${customerKey} not found in payload.`, 'payload', 'meter_event_no_customer_defined');
    const value = payload[valueKey];
    // count meters need no value; sum and last need a whole number.
    if (meter?.default_aggregation.formula !== 'count' || value !== undefined) {
      if (value === undefined) throw invalid(`Value key ${valueKey} not found in payload.`, `payload[${valueKey}]`, 'meter_event_value_not_found');
      if (!/^\d{1,18}$/.test(value)) throw invalid(`payload[${valueKey}] must be a whole number, got "${value}".`, `payload[${valueKey}]`, 'meter_event_invalid_value');
    }
    return { identifier, event_name: e.event_name, timestamp, created: nowS, payload, cancelled: false, via };
  }

  /** Stores a validated event, refusing an identifier seen within the dedupe window. */
  record(ev: MeterEvent): void {
    const events = this.data().events;
    const prior = events[ev.identifier];
    if (prior !== undefined && ev.created - prior.created < this.identifierWindowS) {
      throw new StripeHttpError(400, 'invalid_request_error', `An event already exists with identifier ${ev.identifier}.`, 'duplicate_meter_event', 'identifier', false);
    }
    events[ev.identifier] = ev;
    this.changed();
  }

  cancel(eventName: unknown, type: unknown, identifier: unknown, nowS: number): { identifier: string; event_name: string } {
    if (typeof eventName !== 'string' || eventName === '') throw missingParam('event_name');
    if (type !== 'cancel') throw invalid('type must be cancel.', 'type');
    if (typeof identifier !== 'string' || identifier === '') throw missingParam('cancel[identifier]');
    const ev = this.data().events[identifier];
    if (ev === undefined || ev.event_name !== eventName) throw notFound('meter event', identifier, 'cancel[identifier]');
    if (nowS - ev.created > CANCEL_WINDOW_S) throw invalid('You can only cancel events within 24 hours of Stripe receiving them.', 'cancel[identifier]');
    if (ev.cancelled) throw invalid(`The meter event with identifier ${identifier} has already been canceled.`, 'cancel[identifier]', 'meter_event_already_canceled');
    ev.cancelled = true;
    this.changed();
    return { identifier, event_name: eventName };
  }

  meterForEvent(eventName: string): Meter | undefined {
    for (const m of Object.values(this.data().meters)) if (m.event_name === eventName && m.status === 'active') return m;
    return undefined;
  }

  /** Aggregated values of a meter for one customer over [start, end), optionally per hour or day. */
  summaries(meter: Meter, customer: string, start: number, end: number, grouping: 'hour' | 'day' | undefined): Array<{ start: number; end: number; value: number }> {
    const step = grouping === 'hour' ? 3_600 : grouping === 'day' ? 86_400 : end - start;
    const buckets: Array<{ start: number; end: number; value: number; last: number; lastAt: number }> = [];
    for (let s = start; s < end; s += step) buckets.push({ start: s, end: Math.min(end, s + step), value: 0, last: 0, lastAt: -1 });
    const ck = meter.customer_mapping.event_payload_key;
    const vk = meter.value_settings.event_payload_key;
    const f = meter.default_aggregation.formula;
    for (const ev of Object.values(this.data().events)) {
      if (ev.cancelled || ev.event_name !== meter.event_name || ev.payload[ck] !== customer) continue;
      if (ev.timestamp < start || ev.timestamp >= end) continue;
      const b = buckets[Math.floor((ev.timestamp - start) / step)]!;
      const v = Number(ev.payload[vk] ?? 0);
      if (f === 'count') b.value += 1;
      else if (f === 'sum') b.value += v;
      else if (ev.timestamp >= b.lastAt) { b.last = v; b.lastAt = ev.timestamp; }
    }
    return buckets.map((b) => ({ start: b.start, end: b.end, value: f === 'last' ? b.last : b.value }));
  }
}

function parseTimestamp(t: unknown, nowS: number): number {
  if (t === undefined || t === '') return nowS;
  if (typeof t === 'number' && Number.isInteger(t)) return t;
  if (typeof t === 'string' && /^\d+$/.test(t)) return Number(t);
  if (typeof t === 'string') {
    const ms = Date.parse(t);
    if (Number.isFinite(ms) && /^\d{4}-\d{2}-\d{2}T/.test(t)) return Math.floor(ms / 1000);
  }
  throw invalid('Invalid timestamp: must be an integer Unix timestamp (v1) or an RFC 3339 date-time (v2).', 'timestamp');
}
