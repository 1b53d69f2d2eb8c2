import type Stripe from 'stripe';
import type { EventsOut } from './events-out.js';
import type { Meter } from './state.js';

/** The codes Stripe reports for events it rejected during asynchronous validation. */
export type ErrorReportCode =
  | Stripe.Events.V1BillingMeterErrorReportTriggeredEvent.Data.Reason.ErrorType.Code
  // Newer than stripe-node 17's types: an event lacking one of its meter's dimension_payload_keys.
  | 'missing_dimension_payload_keys';

/** Sample errors kept per code and report: Stripe sends a sample, not every rejected identifier. */
export const SAMPLES_PER_CODE = 5;

interface Pending {
  meter: Meter | undefined;
  byCode: Map<
    ErrorReportCode,
    { count: number; samples: Array<{ error_message: string; request: { identifier: string } }> }
  >;
  count: number;
}

/**
 * Stripe's meter error reports, as https://docs.stripe.com/api/v2/core/events/event-types and the
 * v2 Event object (https://docs.stripe.com/api/v2/core/events/object) document them: events
 * rejected asynchronously are gathered over a validation window, then one thin event is emitted
 * per meter — `v1.billing.meter.error_report_triggered`, `related_object` the meter — with
 * `data.reason.error_count`, `data.reason.error_types[] { code, error_count, sample_errors[]
 * { error_message, request: { identifier } } }`, `validation_start`, `validation_end` and
 * `developer_message_summary`. Events whose event_name matches no meter have no meter to relate
 * to: they are reported as `v1.billing.meter.no_meter_found` (code `no_meter`), without
 * `related_object`.
 */
export class ErrorReports {
  private readonly pending = new Map<string, Pending>();
  private windowStartS: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly out: EventsOut,
    private readonly windowMs: number,
    private readonly nowS: () => number,
  ) {}

  report(meter: Meter | undefined, code: ErrorReportCode, message: string, identifier: string): void {
    if (this.stopped) return;
    const key = meter?.id ?? '';
    let p = this.pending.get(key);
    if (p === undefined) this.pending.set(key, (p = { meter, byCode: new Map(), count: 0 }));
    let c = p.byCode.get(code);
    if (c === undefined) p.byCode.set(code, (c = { count: 0, samples: [] }));
    c.count += 1;
    p.count += 1;
    if (c.samples.length < SAMPLES_PER_CODE) c.samples.push({ error_message: message, request: { identifier } });
    this.windowStartS ??= this.nowS();
    if (this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.flush();
      }, this.windowMs);
      this.timer.unref();
    }
  }

  /** Emits one report per meter for the window so far. */
  flush(): void {
    if (this.pending.size === 0) return;
    const start = new Date((this.windowStartS ?? this.nowS()) * 1000).toISOString();
    const end = new Date(Math.max(this.nowS(), this.windowStartS ?? 0) * 1000).toISOString();
    for (const p of this.pending.values()) {
      const data = {
        developer_message_summary: p.count === 1 ? 'There is 1 invalid event' : `There are ${p.count} invalid events`,
        reason: {
          error_count: p.count,
          error_types: [...p.byCode].map(([code, c]) => ({ code, error_count: c.count, sample_errors: c.samples })),
        },
        validation_end: end,
        validation_start: start,
      };
      if (p.meter === undefined) this.out.emitThinEvent('v1.billing.meter.no_meter_found', null, data);
      else
        this.out.emitThinEvent(
          'v1.billing.meter.error_report_triggered',
          { id: p.meter.id, type: 'billing.meter', url: `/v1/billing/meters/${p.meter.id}` },
          data,
        );
    }
    this.pending.clear();
    this.windowStartS = undefined;
  }

  /** Reports what is pending and stops the window timer. */
  close(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.flush();
    this.stopped = true;
  }
}
