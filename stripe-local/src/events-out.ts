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

/** Stripe's API version stripe-local speaks. */
export const API_VERSION = '2024-09-30.acacia';
const MAX_STORED = 10_000;

export class EventsOut {
  private stopped = false;
  private readonly waking = new Set<() => void>();
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(
    private readonly data: () => StateData,
    private readonly changed: () => void,
    private readonly o: EventsOutOptions,
  ) {}

  /**
   * A v1 snapshot event: `type` such as `customer.created`, `dataObject` the object as it now is.
   * `delivery` settles with the final outcome (after retries), or null when no endpoint is set.
   */
  emitEvent(
    type: string,
    dataObject: object,
    previousAttributes?: Record<string, unknown>,
  ): { event: Stripe.Event; delivery: Promise<Delivery | null> } {
    const event = snapshotEvent(type, dataObject, this.o.nowS(), previousAttributes, this.o.url === '' ? 0 : 1);
    push(this.data().v1Events, event);
    this.changed();
    const delivery = this.deliver(event.id, type, JSON.stringify(event), () => {
      event.pending_webhooks = 0;
    });
    return { event, delivery };
  }

  /** A v2 thin event: stored with `data`, delivered without it. */
  emitThinEvent(type: string, related: ThinEvent['related_object'] | null, data: Record<string, unknown>): ThinEvent {
    const event: ThinEvent = {
      id: stripeId('evt_test'),
      object: 'v2.core.event',
      type,
      created: new Date(this.o.nowS() * 1000).toISOString(),
      context: null,
      livemode: false,
      reason: null,
      ...(related === null ? {} : { related_object: related }),
      data,
    };
    push(this.data().v2Events, event);
    this.changed();
    // The delivery is thin: no `data`, and no `related_object` when there is none.
    const thin: Record<string, unknown> = {
      id: event.id,
      object: event.object,
      type,
      created: event.created,
      context: null,
      livemode: false,
      reason: null,
    };
    if (related !== null) thin.related_object = related;
    void this.deliver(event.id, type, JSON.stringify(thin));
    return event;
  }

  private deliver(id: string, type: string, body: string, delivered?: () => void): Promise<Delivery | null> {
    if (this.o.url === '' || this.stopped) return Promise.resolve(null);
    this.o.sent?.(body, `webhook ${type}`);
    const delays = this.o.retryDelaysMs ?? [1_000, 5_000, 25_000];
    const p = (async (): Promise<Delivery> => {
      for (let attempt = 0; ; attempt++) {
        const d = await signedPost(this.o.url, this.o.secret, id, type, body);
        if (d.status !== null && d.status >= 200 && d.status < 300) {
          delivered?.();
          return d;
        }
        this.o.onDeliveryError?.({
          id,
          type,
          attempt,
          ...(d.status === null ? {} : { status: d.status }),
          message: d.error ?? `endpoint answered ${d.status}`,
        });
        if (attempt >= delays.length || !(await this.pause(delays[attempt]!))) return d;
      }
    })();
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
    return p;
  }

  /** Waits `ms` before a retry; resolves false at once when closed. */
  private pause(ms: number): Promise<boolean> {
    if (this.stopped) return Promise.resolve(false);
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(t);
        this.waking.delete(wake);
        resolve(!this.stopped);
      };
      const t = setTimeout(wake, ms);
      t.unref();
      this.waking.add(wake);
    });
  }

  /** Stops retries and waits for deliveries under way. */
  async close(): Promise<void> {
    this.stopped = true;
    for (const wake of [...this.waking]) wake();
    await Promise.all([...this.inFlight]);
  }
}

/** One delivery's outcome: the receiver's status, or null with the error when it could not be reached. */
export interface Delivery {
  id: string;
  type: string;
  status: number | null;
  error?: string;
}

/** A v1 snapshot event as Stripe serialises it: `data.object` is the object after the change. */
export function snapshotEvent(
  type: string,
  object: object,
  nowS: number,
  previousAttributes?: Record<string, unknown>,
  pendingWebhooks = 0,
): Stripe.Event {
  return {
    id: stripeId('evt'),
    object: 'event',
    api_version: API_VERSION,
    created: nowS,
    data: { object, ...(previousAttributes ? { previous_attributes: previousAttributes } : {}) },
    livemode: false,
    pending_webhooks: pendingWebhooks,
    request: { id: null, idempotency_key: null },
    type,
  } as unknown as Stripe.Event;
}

/** POSTs one event body signed as Stripe signs webhooks. */
export async function signedPost(
  url: string,
  secret: string,
  id: string,
  type: string,
  body: string,
): Promise<Delivery & { body?: string }> {
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: {
        'Content-Type': 'application/json; charset=utf-8',
        'Stripe-Signature': stripeSignature(secret, body),
        'User-Agent': 'Stripe/1.0 (+https://stripe.com/docs/webhooks)',
      },
      body,
      signal: AbortSignal.timeout(10_000),
    });
    return { id, type, status: res.status, body: (await res.text()).slice(0, 2_000) };
  } catch (err) {
    return { id, type, status: null, error: (err as Error).message };
  }
}

function push<T>(list: T[], item: T): void {
  // Bounded: a long run must not grow memory without end.
  if (list.length >= MAX_STORED) list.shift();
  list.push(item);
}
