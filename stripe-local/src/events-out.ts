import type Stripe from 'stripe';
import { stripeSignature } from './signature.js';
import { stripeId, type StateData, type ThinEvent } from './state.js';

/**
 * Events stripe-local emits, stored for retrieval and delivered, signed as Stripe signs them, to
 * the one configured endpoint (STRIPE_LOCAL_WEBHOOK_URL, secret STRIPE_LOCAL_WEBHOOK_SECRET).
 *
 * Two kinds, as Stripe has them:
 * - v1 snapshot events (`object: "event"`, the whole object in `data.object`), listed by
 *   GET /v1/events (`type` filter) and GET /v1/events/:id — https://docs.stripe.com/api/events/object;
 * - v2 thin events (`object: "v2.core.event"`): the delivery carries only the reference
 *   (`related_object`), the receiver fetches the full event with its `data` from
 *   GET /v2/core/events/:id — https://docs.stripe.com/api/v2/core/events/object and
 *   https://docs.stripe.com/event-destinations#thin-events. The meter error reports
 *   (`v1.billing.meter.error_report_triggered`, `v1.billing.meter.no_meter_found`) are thin events.
 *   stripe-node verifies a delivery with `stripe.parseThinEvent(body, signature, secret)`.
 *
 * Stripe sends thin and snapshot events to separately configured destinations; stripe-local has
 * one endpoint for both, and the receiver tells them apart by `object`.
 * A failed delivery is retried with backoff (Stripe retries for up to 3 days; here a few times).
 */
export interface EventsOutOptions {
  url: string;
  secret: string;
  nowS: () => number;
  /** Called with each failed delivery attempt (never the secret). */
  onDeliveryError?: (err: { id: string; type: string; attempt: number; status?: number; message: string }) => void;
  retryDelaysMs?: number[];
  /** Sees each payload sent (the recorder). */
  sent?: (body: string, where: string) => void;
}

const API_VERSION = '2024-09-30.acacia';
const MAX_STORED = 10_000;

export class EventsOut {
  private stopped = false;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly inFlight = new Set<Promise<void>>();

  constructor(private readonly data: () => StateData, private readonly changed: () => void, private readonly o: EventsOutOptions) {}

  /** A v1 snapshot event: `type` such as `customer.created`, `dataObject` the object as it now is. */
  emitEvent(type: string, dataObject: Record<string, unknown>, previousAttributes?: Record<string, unknown>): Stripe.Event {
    const event = {
      id: stripeId('evt'), object: 'event', api_version: API_VERSION, created: this.o.nowS(),
      data: { object: dataObject, ...(previousAttributes ? { previous_attributes: previousAttributes } : {}) },
      livemode: false, pending_webhooks: this.o.url === '' ? 0 : 1, request: { id: null, idempotency_key: null }, type,
    } as unknown as Stripe.Event;
    push(this.data().v1Events, event);
    this.changed();
    this.deliver(event.id, type, JSON.stringify(event), () => { event.pending_webhooks = 0; });
    return event;
  }

  /** A v2 thin event: stored with `data`, delivered without it. */
  emitThinEvent(type: string, related: ThinEvent['related_object'] | null, data: Record<string, unknown>): ThinEvent {
    const event: ThinEvent = {
      id: stripeId('evt_test'), object: 'v2.core.event', type, created: new Date(this.o.nowS() * 1000).toISOString(),
      context: null, livemode: false, reason: null, ...(related === null ? {} : { related_object: related }), data,
    };
    push(this.data().v2Events, event);
    this.changed();
    // The delivery is thin: no `data`, and no `related_object` when there is none.
    const thin: Record<string, unknown> = { id: event.id, object: event.object, type, created: event.created, context: null, livemode: false, reason: null };
    if (related !== null) thin.related_object = related;
    this.deliver(event.id, type, JSON.stringify(thin));
    return event;
  }

  private deliver(id: string, type: string, body: string, delivered?: () => void, attempt = 0): void {
    if (this.o.url === '' || this.stopped) return;
    if (attempt === 0) this.o.sent?.(body, `webhook ${type}`);
    const p = (async () => {
      let status: number | undefined;
      try {
        const res = await fetch(this.o.url, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json; charset=utf-8', 'Stripe-Signature': stripeSignature(this.o.secret, body), 'User-Agent': 'Stripe/1.0 (+https://stripe.com/docs/webhooks)' },
          body,
          signal: AbortSignal.timeout(10_000),
        });
        status = res.status;
        await res.arrayBuffer();
        if (res.ok) { delivered?.(); return; }
        this.o.onDeliveryError?.({ id, type, attempt, status, message: `endpoint answered ${res.status}` });
      } catch (err) {
        this.o.onDeliveryError?.({ id, type, attempt, message: (err as Error).message });
      }
      const delays = this.o.retryDelaysMs ?? [1_000, 5_000, 25_000];
      if (attempt >= delays.length || this.stopped) return;
      const t = setTimeout(() => { this.timers.delete(t); this.deliver(id, type, body, delivered, attempt + 1); }, delays[attempt]);
      t.unref();
      this.timers.add(t);
    })();
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  /** Stops retries and waits for deliveries under way. */
  async close(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await Promise.all([...this.inFlight]);
  }
}

function push<T>(list: T[], item: T): void {
  // Bounded: a long run must not grow memory without end.
  if (list.length >= MAX_STORED) list.shift();
  list.push(item);
}
