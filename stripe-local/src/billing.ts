import { invalid, missingParam, StripeHttpError, StripeV2Error } from './stripe-error.js';
import { stripeId, type MeterEvent, type Meter, type StateData } from './state.js';
import type { ErrorReportCode, ErrorReports } from './error-reports.js';

/**
 * The billing meter rules as Stripe documents them (https://docs.stripe.com/api/billing/meter-event/create,
 * https://docs.stripe.com/api/v2/billing/meter-event/create, .../meter-event-stream/create,
 * https://docs.stripe.com/billing/subscriptions/usage-based/meters/configure):
 * - identifiers are unique within a rolling window of at least 24 hours: a repeat inside it is
 *   refused ("An event already exists with identifier …", Stripe-Should-Retry: false; v2 code
 *   `duplicate_meter_event`); a repeat after it is a new event and counts again;
 * - timestamps within the past 35 days and at most 5 minutes ahead;
 * - values are whole numbers, negative ones included ("you can also fix incorrectly recorded usage
 *   data by recording negative quantities"); stripe-local bounds them to ±(2^53−1);
 * - the v1 and v2 single-event endpoints validate the request synchronously; the stream, and the
 *   parts Stripe checks later on every path (the meter exists, the customer exists), are
 *   validated asynchronously: a rejected event is dropped and reported in a meter error report;
 * - adjustments cancel one event by identifier within 24 hours of its receipt; they answer
 *   `status: pending` and apply asynchronously, also for an identifier Stripe does not know
 *   (nothing is cancelled then; Stripe's error reports have no code for it);
 * - summaries over minute-aligned [start_time, end_time) ranges;
 * - a meter's `dimension_payload_keys` ("Each key must be present in the event payload"): an event
 *   without one is refused (v1/v2) or dropped and reported (`missing_dimension_payload_keys`). An
 *   empty value counts as absent (on v1 an empty form value unsets a parameter). Summaries sum
 *   every dimension; the Meter Usage Analytics read (`usage`) filters and groups by them.
 */
const PAST_S = 35 * 86_400;
const FUTURE_S = 5 * 60;
const CANCEL_WINDOW_S = 24 * 3_600;
const MAX_LEN = 100;

export type Via = MeterEvent['via'];

export interface EventInput {
  event_name: unknown;
  payload: unknown;
  identifier: unknown;
  /** Epoch seconds (v1) or an ISO date-time (v2); absent means now. */
  timestamp: unknown;
}

export interface BillingOptions {
  identifierWindowS: number;
  /** Refuse events whose customer stripe-local does not know (as Stripe does, asynchronously). */
  checkCustomers: boolean;
  /** The `v1_refuse_unknown_customers` fault (faults.ts): v1 refuses an unknown customer synchronously. */
  refuseUnknownCustomersV1: () => boolean;
}

/** One rule broken: the v1 error (code, param), the v2 code, and the error report code for asynchronous paths. */
interface Rule {
  v1: () => StripeHttpError;
  v2: string;
  report: ErrorReportCode | undefined;
  message: string;
}

function broken(r: Rule, via: Via): StripeHttpError {
  return via === 'v2' ? new StripeV2Error(400, r.v2, r.message) : r.v1();
}

export class Billing {
  constructor(
    private readonly data: () => StateData,
    private readonly o: BillingOptions,
    private readonly changed: () => void,
    private readonly reports: ErrorReports,
  ) {}

  /**
   * Validates, dedupes and stores one event. On v1/v2 a synchronous rule throws; on the stream
   * (and for the meter and customer checks everywhere) a broken rule drops the event and reports it.
   */
  accept(e: EventInput, nowS: number, via: Via): MeterEvent {
    const ev = this.shape(e, nowS, via);
    const meter = this.meterForEvent(ev.event_name);
    if (meter === undefined && via === 'v2')
      throw new StripeV2Error(400, 'no_meter', `No active meter was found for event_name ${ev.event_name}.`);
    const rule = this.contentRule(ev, meter, nowS);
    if (rule !== undefined) {
      if (via !== 'v2_stream' || rule.report === undefined) throw broken(rule, via);
      this.reject(ev, meter, rule.report, rule.message);
      return ev;
    }
    if (via === 'v1' && meter !== undefined && this.o.refuseUnknownCustomersV1()) {
      const param = `payload[${meter.customer_mapping.event_payload_key}]`;
      const id = ev.payload[meter.customer_mapping.event_payload_key]!;
      if (this.data().customers[id] === undefined)
        throw new StripeHttpError(400, 'invalid_request_error', `No such customer: '${id}'`, 'resource_missing', param);
    }
    this.record(ev);
    // Stripe's later checks: the meter and the customer must exist.
    if (meter === undefined)
      this.reject(ev, undefined, 'no_meter', `No active meter was found for event_name ${ev.event_name}.`);
    else if (
      this.o.checkCustomers &&
      this.data().customers[ev.payload[meter.customer_mapping.event_payload_key]!] === undefined
    ) {
      this.reject(
        ev,
        meter,
        'meter_event_customer_not_found',
        `No customer was found with ID ${ev.payload[meter.customer_mapping.event_payload_key]}.`,
      );
    }
    return ev;
  }

  /** The request's own shape (types, lengths): refused synchronously on every path. */
  private shape(e: EventInput, nowS: number, via: Via): MeterEvent {
    if (e.event_name === undefined || e.event_name === '') throw missingParam('event_name');
    if (typeof e.event_name !== 'string' || e.event_name.length > MAX_LEN)
      throw invalid('event_name must be a string of at most 100 characters.', 'event_name');
    if (typeof e.payload !== 'object' || e.payload === null || Array.isArray(e.payload)) throw missingParam('payload');
    const payload: Record<string, string> = {};
    for (const [k, v] of Object.entries(e.payload as Record<string, unknown>)) {
      if (typeof v !== 'string') throw invalid(`payload[${k}] must be a string.`, `payload[${k}]`);
      payload[k] = v;
    }
    let identifier: string;
    if (e.identifier === undefined || e.identifier === '') identifier = stripeId('mev');
    else if (typeof e.identifier !== 'string' || e.identifier.length > MAX_LEN)
      throw invalid('identifier must be a string of at most 100 characters.', 'identifier');
    else identifier = e.identifier;
    return {
      key: '',
      identifier,
      event_name: e.event_name,
      timestamp: parseTimestamp(e.timestamp, nowS),
      created: nowS,
      payload,
      cancel_requested: false,
      cancelled: false,
      via,
    };
  }

  /** Timestamp, customer key and value: synchronous on v1/v2, reported on the stream. */
  private contentRule(ev: MeterEvent, meter: Meter | undefined, nowS: number): Rule | undefined {
    if (ev.timestamp < nowS - PAST_S || ev.timestamp > nowS + FUTURE_S) {
      const past = ev.timestamp < nowS - PAST_S;
      const message = 'Timestamp must be within the past 35 calendar days or up to 5 minutes in the future.';
      return {
        v1: () => invalid(message, 'timestamp', 'timestamp_outside_range'),
        v2: past ? 'timestamp_too_far_in_past' : 'timestamp_in_future',
        report: past ? 'timestamp_too_far_in_past' : 'timestamp_in_future',
        message,
      };
    }
    const customerKey = meter?.customer_mapping.event_payload_key ?? 'stripe_customer_id';
    const valueKey = meter?.value_settings.event_payload_key ?? 'value';
    if (ev.payload[customerKey] === undefined) {
      const message = `Customer mapping key ${customerKey} not found in payload.`;
      return {
        v1: () => invalid(message, 'payload', 'meter_event_no_customer_defined'),
        v2: 'payload_no_customer_defined',
        report: 'meter_event_no_customer_defined',
        message,
      };
    }
    const value = ev.payload[valueKey];
    // count meters need no value; sum and last need a whole number.
    if (meter?.default_aggregation.formula === 'count' && value === undefined) return undefined;
    if (value === undefined) {
      const message = `Value key ${valueKey} not found in payload.`;
      return {
        v1: () => invalid(message, `payload[${valueKey}]`, 'meter_event_value_not_found'),
        v2: 'payload_no_value_defined',
        report: 'meter_event_invalid_value',
        message,
      };
    }
    const missingDim = (meter?.dimension_payload_keys ?? []).find((k) => (ev.payload[k] ?? '') === '');
    if (missingDim !== undefined) {
      const message = `Dimension payload key ${missingDim} not found in payload.`;
      return {
        v1: () => invalid(message, `payload[${missingDim}]`, 'missing_dimension_payload_keys'),
        v2: 'missing_dimension_payload_keys',
        report: 'missing_dimension_payload_keys',
        message,
      };
    }
    if (!/^-?\d{1,16}$/.test(value) || !Number.isSafeInteger(Number(value))) {
      const message = `payload[${valueKey}] must be a whole number within ±(2^53−1), got "${value}".`;
      return {
        v1: () => invalid(message, `payload[${valueKey}]`, 'meter_event_invalid_value'),
        v2: 'payload_invalid_value',
        report: 'meter_event_invalid_value',
        message,
      };
    }
    return undefined;
  }

  /** Stores an event, refusing an identifier seen within the dedupe window; after it, the repeat is a new event. */
  private record(ev: MeterEvent): void {
    const d = this.data();
    const priorKey = d.identifiers[ev.identifier];
    const prior = priorKey === undefined ? undefined : d.events[priorKey];
    if (prior !== undefined && ev.created - prior.created < this.o.identifierWindowS) {
      const message = `An event already exists with identifier ${ev.identifier}.`;
      if (ev.via === 'v2') throw new StripeV2Error(400, 'duplicate_meter_event', message, undefined, false);
      throw new StripeHttpError(400, 'invalid_request_error', message, 'duplicate_meter_event', 'identifier', false);
    }
    ev.key = stripeId('mevk');
    d.events[ev.key] = ev;
    d.identifiers[ev.identifier] = ev.key;
    this.changed();
  }

  private reject(ev: MeterEvent, meter: Meter | undefined, code: ErrorReportCode, message: string): void {
    const d = this.data();
    if (ev.key !== '') {
      // Stored for dedupe, but never counted: drop it the way Stripe drops an event it rejected.
      delete d.events[ev.key];
      if (d.identifiers[ev.identifier] === ev.key) delete d.identifiers[ev.identifier];
    }
    // Bounded: a long chaos run must not grow memory without end.
    if (d.streamErrors.length >= 10_000) d.streamErrors.shift();
    d.streamErrors.push({ at: ev.created, identifier: ev.identifier, code, message });
    this.changed();
    this.reports.report(meter, code, message, ev.identifier);
  }

  /**
   * Accepts a cancel (answered `pending`); `apply` runs later. Refused at once only when Stripe
   * can tell from the request: a malformed one, an event older than 24 hours, or one already cancelled.
   */
  cancel(
    eventName: unknown,
    type: unknown,
    identifier: unknown,
    nowS: number,
    via: Via,
  ): { identifier: string; event_name: string; apply: () => void } {
    if (typeof eventName !== 'string' || eventName === '') throw missingParam('event_name');
    if (type !== 'cancel') throw invalid('type must be cancel.', 'type');
    if (typeof identifier !== 'string' || identifier === '') throw missingParam('cancel[identifier]');
    const key = this.data().identifiers[identifier];
    const ev = key === undefined ? undefined : this.data().events[key];
    const known = ev !== undefined && ev.event_name === eventName;
    if (known && nowS - ev.created > CANCEL_WINDOW_S)
      throw invalid('You can only cancel events within 24 hours of Stripe receiving them.', 'cancel[identifier]');
    if (known && ev.cancel_requested) {
      const message = `The meter event with identifier ${identifier} has already been canceled.`;
      if (via === 'v2') throw new StripeV2Error(400, 'meter_event_already_canceled', message);
      throw invalid(message, 'cancel[identifier]', 'meter_event_already_canceled');
    }
    if (known) ev.cancel_requested = true;
    return {
      identifier,
      event_name: eventName,
      apply: () => {
        if (!known || ev.cancelled) return;
        ev.cancelled = true;
        this.changed();
      },
    };
  }

  meterForEvent(eventName: string): Meter | undefined {
    for (const m of Object.values(this.data().meters))
      if (m.event_name === eventName && m.status === 'active') return m;
    return undefined;
  }

  /**
   * Aggregated values of a meter for one customer over [start, end), optionally per hour or day.
   * A pre-aggregated meter (`event_time_window` hour/day) places each event at the start of its
   * window, so its value lands in the summary that holds the window start.
   */
  summaries(
    meter: Meter,
    customer: string,
    start: number,
    end: number,
    grouping: 'hour' | 'day' | undefined,
  ): Array<{ start: number; end: number; value: number }> {
    return this.usage(meter, customer, start, end, grouping, { groupBy: [], filters: {} });
  }

  /**
   * As summaries, split by the values of `by.groupBy` (dimension payload keys) and keeping only
   * events whose dimension `k` is one of `by.filters[k]`: the Meter Usage Analytics read. Buckets
   * without events are left out when grouping (there is no group to name), kept as 0 otherwise.
   */
  usage(
    meter: Meter,
    customer: string,
    start: number,
    end: number,
    grouping: 'hour' | 'day' | undefined,
    by: { groupBy: readonly string[]; filters: Readonly<Record<string, readonly string[]>> },
  ): Array<{ start: number; end: number; value: number; dimensions: Record<string, string> }> {
    const step = grouping === 'hour' ? 3_600 : grouping === 'day' ? 86_400 : end - start;
    // `last`: the value of the latest event by timestamp, ties broken by the later receipt.
    interface Bucket {
      start: number;
      end: number;
      value: number;
      last: number;
      lastAt: number;
      lastCreated: number;
      dimensions: Record<string, string>;
    }
    const empty = (s: number, dimensions: Record<string, string>): Bucket => ({
      start: s,
      end: Math.min(end, s + step),
      value: 0,
      last: 0,
      lastAt: -1,
      lastCreated: -1,
      dimensions,
    });
    const buckets = new Map<string, Bucket>();
    if (by.groupBy.length === 0) for (let s = start; s < end; s += step) buckets.set(`${s}\n[]`, empty(s, {}));
    const ck = meter.customer_mapping.event_payload_key;
    const vk = meter.value_settings.event_payload_key;
    const f = meter.default_aggregation.formula;
    const windowS = meter.event_time_window === 'hour' ? 3_600 : meter.event_time_window === 'day' ? 86_400 : 1;
    const filters = Object.entries(by.filters);
    for (const ev of Object.values(this.data().events)) {
      if (ev.cancelled || ev.event_name !== meter.event_name || ev.payload[ck] !== customer) continue;
      if (!filters.every(([k, vs]) => vs.includes(ev.payload[k] ?? ''))) continue;
      const at = Math.floor(ev.timestamp / windowS) * windowS;
      if (at < start || at >= end) continue;
      const s = start + Math.floor((at - start) / step) * step;
      const dims = Object.fromEntries(by.groupBy.map((k) => [k, ev.payload[k] ?? '']));
      const key = `${s}\n${JSON.stringify(Object.values(dims))}`;
      let b = buckets.get(key);
      if (b === undefined) buckets.set(key, (b = empty(s, dims)));
      const v = Number(ev.payload[vk] ?? 0);
      if (f === 'count') b.value += 1;
      else if (f === 'sum') b.value += v;
      else if (ev.timestamp > b.lastAt || (ev.timestamp === b.lastAt && ev.created >= b.lastCreated)) {
        b.last = v;
        b.lastAt = ev.timestamp;
        b.lastCreated = ev.created;
      }
    }
    return [...buckets.values()]
      .sort((a, b) => a.start - b.start || JSON.stringify(a.dimensions).localeCompare(JSON.stringify(b.dimensions)))
      .map((b) => ({
        start: b.start,
        end: b.end,
        value: f === 'last' ? b.last : b.value,
        dimensions: b.dimensions,
      }));
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
  throw invalid(
    'Invalid timestamp: must be an integer Unix timestamp (v1) or an RFC 3339 date-time (v2).',
    'timestamp',
  );
}
