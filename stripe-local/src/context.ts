import type { Billing } from './billing.js';
import type { EventsOut } from './events-out.js';
import type { StateData } from './state.js';

/** What a route handler gets: the parsed request and the server's state. Handlers return a JSON body string. */
export interface Request {
  method: string;
  path: string;
  query: URLSearchParams;
  /** Raw body text (form-encoded for v1, JSON for v2). */
  body: string;
  /** The route's path parameters (`:id` → `params.id`). */
  params: Record<string, string>;
  /** The Authorization header's Bearer value (a key, or the stream's session token). */
  bearer: string | undefined;
  nowS: number;
}

/**
 * One Stripe API route: Fastify's router picks it by method and path; the server runs the shared
 * steps (rate limit, authentication, faults, idempotency) around `handle`.
 */
export interface StripeRoute {
  method: 'GET' | 'POST' | 'DELETE';
  url: string;
  /** 'session': the stream authenticates by a session token in its handler, not by the API key. */
  auth?: 'key' | 'session';
  handle(ctx: Context, r: Request): Routed;
}

export interface Context {
  data: () => StateData;
  billing: Billing;
  changed: () => void;
  /** Base URL the server is reachable at (for portal session URLs). */
  baseUrl: () => string;
  sessionTtlS: number;
  /** Emits v1 and v2 events (stored, and delivered to the configured endpoint). */
  events: EventsOut;
  /** stripe-local's clock in Unix seconds (a test can move it forward). */
  nowS: () => number;
  /** Runs work after the answer, the way Stripe applies adjustments asynchronously. */
  later: (work: () => void) => void;
}

export interface Routed {
  status: number;
  body: string;
}

/** A 200 answering with `body` as JSON. */
export const ok = (body: unknown): Routed => ({ status: 200, body: JSON.stringify(body) });
