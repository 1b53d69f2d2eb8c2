import { randomBytes } from 'node:crypto';
import { readFile, writeFile, rename } from 'node:fs/promises';
import type Stripe from 'stripe';
import { Loop } from '@meterd/core/loop';
import type { CheckoutState } from './checkout-state.js';

/**
 * What stripe-local remembers. Plain JSON-able records so the whole state can be saved to a file.
 * The objects it returns are typed with stripe-node's own types, so a field Stripe has and
 * stripe-local forgot is a compile error rather than a surprise in production.
 */
export type Customer = Stripe.Customer;

/** stripe-node 17's Meter type predates the `last` formula (added to the API in 2025); stripe-local keeps it. */
export type Meter = Omit<Stripe.Billing.Meter, 'default_aggregation'> & {
  default_aggregation: { formula: Stripe.Billing.Meter.DefaultAggregation.Formula | 'last' };
  /**
   * The payload keys meter events are grouped by (also newer than stripe-node 17): each must be in
   * every event's payload. Absent on meters saved before stripe-local knew them: read as [].
   */
  dimension_payload_keys?: string[];
};

export interface MeterEvent {
  /** Internal key: an identifier seen again after its dedupe window is a new event, so identifiers are not unique here. */
  key: string;
  identifier: string;
  event_name: string;
  timestamp: number;
  created: number;
  payload: Record<string, string>;
  /** A cancel was accepted (answered `pending`); `cancelled` is set once it has been applied. */
  cancel_requested: boolean;
  cancelled: boolean;
  via: 'v1' | 'v2' | 'v2_stream';
}

export interface Session {
  id: string;
  token: string;
  created: number;
  expires_at: number;
}

export interface StreamError {
  at: number;
  identifier: string | null;
  code: string;
  message: string;
}

/** A v2 "thin" event (Stripe's event destinations), stored with its data for GET /v2/core/events/:id. */
export type ThinEvent = Stripe.V2.EventBase & {
  /** Absent when the event relates to no object (`v1.billing.meter.no_meter_found`). */
  related_object?: { id: string; type: string; url: string };
  data: Record<string, unknown>;
};

export interface StateData {
  customers: Record<string, Customer>;
  meters: Record<string, Meter>;
  /** Keyed by MeterEvent.key. */
  events: Record<string, MeterEvent>;
  /** Identifier → key of its latest event: Stripe's dedupe is per account and identifier. */
  identifiers: Record<string, string>;
  sessions: Record<string, Session>;
  /** Errors found by the asynchronous validation of events; also reported as Stripe reports them
   *  (`v1.billing.meter.error_report_triggered`). Kept so tests and operators can see them. */
  streamErrors: StreamError[];
  /** v1 (snapshot) events, newest last, for GET /v1/events. */
  v1Events: Stripe.Event[];
  /** v2 (thin) events, newest last, for GET /v2/core/events. */
  v2Events: ThinEvent[];
  /** Products, prices, Checkout Sessions and subscriptions (routes-checkout.ts). */
  checkout: CheckoutState;
}

export function emptyState(): StateData {
  return {
    customers: {},
    meters: {},
    events: {},
    identifiers: {},
    sessions: {},
    streamErrors: [],
    v1Events: [],
    v2Events: [],
    checkout: { products: {}, prices: {}, sessions: {}, subscriptions: {} },
  };
}

export function stripeId(prefix: string): string {
  return `${prefix}_${randomBytes(12).toString('base64url').replace(/[-_]/g, 'x')}`;
}

export class StateFile {
  private dirty = false;
  private loop: Loop | undefined;

  constructor(
    private readonly path: string,
    private readonly onError: (err: unknown) => void,
  ) {}

  async load(): Promise<StateData> {
    try {
      return { ...emptyState(), ...(JSON.parse(await readFile(this.path, 'utf8')) as Partial<StateData>) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return emptyState();
      throw err;
    }
  }

  markDirty(): void {
    this.dirty = true;
  }

  start(get: () => StateData, everyMs = 2_000): void {
    this.loop = new Loop(() => this.save(get()), { intervalMs: everyMs, onError: (err) => this.onError(err) }).start(
      everyMs,
    );
  }

  async save(data: StateData): Promise<void> {
    if (!this.dirty) return;
    this.dirty = false;
    // Write-then-rename: a crash mid-write leaves the previous file intact.
    const tmp = `${this.path}.tmp`;
    try {
      await writeFile(tmp, JSON.stringify(data));
      await rename(tmp, this.path);
    } catch (err) {
      this.dirty = true;
      throw err;
    }
  }

  async stop(data: StateData): Promise<void> {
    // Waits for a save in flight: two saves at once would race on the same temporary file.
    await this.loop?.stop();
    await this.save(data);
  }
}
