import { randomBytes } from 'node:crypto';
import { readFile, writeFile, rename } from 'node:fs/promises';
import type { CheckoutState } from './checkout-state.js';

/** What stripe-local remembers. Plain JSON-able records so the whole state can be saved to a file. */
export interface Customer {
  id: string; object: 'customer'; created: number; email: string | null; name: string | null;
  description: string | null; metadata: Record<string, string>; livemode: false;
}

export interface Meter {
  id: string; object: 'billing.meter'; created: number; updated: number; display_name: string; event_name: string;
  status: 'active' | 'inactive'; livemode: false;
  default_aggregation: { formula: 'sum' | 'count' | 'last' };
  customer_mapping: { type: 'by_id'; event_payload_key: string };
  value_settings: { event_payload_key: string };
  event_time_window: null;
  status_transitions: { deactivated_at: number | null };
}

export interface MeterEvent {
  identifier: string; event_name: string; timestamp: number; created: number;
  payload: Record<string, string>; cancelled: boolean; via: 'v1' | 'v2' | 'v2_stream';
}

export interface Session { id: string; token: string; created: number; expires_at: number }

export interface StreamError { at: number; identifier: string | null; code: string; message: string }

export interface StateData {
  customers: Record<string, Customer>;
  meters: Record<string, Meter>;
  /** Keyed by identifier: Stripe's dedupe is per account and identifier. */
  events: Record<string, MeterEvent>;
  sessions: Record<string, Session>;
  /** Errors found by the asynchronous validation of stream events (Stripe reports these later as
   *  `v1.billing.meter.error_report_triggered`); kept so tests and operators can see them. */
  streamErrors: StreamError[];
  /** Products, prices, Checkout Sessions and subscriptions (routes-checkout.ts). */
  checkout: CheckoutState;
}

export function emptyState(): StateData {
  return { customers: {}, meters: {}, events: {}, sessions: {}, streamErrors: [], checkout: { products: {}, prices: {}, sessions: {}, subscriptions: {} } };
}

export function stripeId(prefix: string): string {
  return `${prefix}_${randomBytes(12).toString('base64url').replace(/[-_]/g, 'x')}`;
}

export class StateFile {
  private dirty = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly path: string) {}

  async load(): Promise<StateData> {
    try {
      return { ...emptyState(), ...(JSON.parse(await readFile(this.path, 'utf8')) as Partial<StateData>) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return emptyState();
      throw err;
    }
  }

  markDirty(): void { this.dirty = true; }

  start(get: () => StateData, everyMs = 2_000): void {
    this.timer = setInterval(() => { void this.save(get()); }, everyMs);
    this.timer.unref();
  }

  async save(data: StateData): Promise<void> {
    if (!this.dirty) return;
    this.dirty = false;
    // Write-then-rename: a crash mid-write leaves the previous file intact.
    const tmp = `${this.path}.tmp`;
    await writeFile(tmp, JSON.stringify(data));
    await rename(tmp, this.path);
  }

  async stop(data: StateData): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.save(data);
  }
}
