import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { MetricsRegistry } from '@meterd/core';
import { Billing } from './billing.js';
import { applyFaults, NO_FAULTS, type Faults } from './faults.js';
import { readBody, send, sendError } from './http-util.js';
import { TokenBucket } from './rate-limit.js';
import { routeV1 } from './routes-v1.js';
import { routeStream, routeV2 } from './routes-v2.js';
import { StateFile, emptyState, type StateData } from './state.js';
import { rateLimited, StripeHttpError } from './stripe-error.js';
import { stripeSignature } from './signature.js';
import { routeCheckout, seedPrices, type PriceSeed } from './routes-checkout.js';
import { checkoutControl } from './checkout-control.js';
import { stripeEventBody, WebhookOut, type WebhookEndpoint } from './webhook-out.js';
import type { Context, Request, Routed } from './context.js';

export interface StripeLocalOptions {
  host: string;
  port: number;
  apiKey: string;
  stateFile: string;
  rateMeterEvents: number;
  rateStream: number;
  rateDefault: number;
  identifierWindowHours: number;
  sessionTtlSeconds: number;
  faults: Partial<Faults>;
  /** Where billing events (checkout, subscriptions) are sent, signed with its secret; unset sends none. */
  webhook?: WebhookEndpoint | null;
  /** Prices created at start unless an active price already has their lookup key. */
  seedPrices?: PriceSeed[];
}

type RouteClass = 'meter_events' | 'stream' | 'default';

/** Routes where fault switches apply: the meter event paths billing-sync depends on. */
const FAULTY = new Set(['/v1/billing/meter_events', '/v1/billing/meter_event_adjustments', '/v2/billing/meter_event_session', '/v2/billing/meter_event_stream', '/v2/billing/meter_events', '/v2/billing/meter_event_adjustments']);

export interface StripeLocal {
  url: string;
  state: () => StateData;
  faults: () => Faults;
  setFaults(update: unknown): Faults;
  close(): Promise<void>;
}

export async function startStripeLocal(o: StripeLocalOptions): Promise<StripeLocal> {
  const file = o.stateFile === '' ? undefined : new StateFile(o.stateFile);
  let data = file ? await file.load() : emptyState();
  let faults: Faults = applyFaults({ ...NO_FAULTS }, o.faults);
  let baseUrl = '';
  const changed = (): void => file?.markDirty();
  const billing = new Billing(() => data, o.identifierWindowHours * 3_600, changed);
  const ctx: Context = { data: () => data, billing, changed, baseUrl: () => baseUrl, sessionTtlS: o.sessionTtlSeconds };
  const buckets: Record<RouteClass, TokenBucket> = {
    meter_events: new TokenBucket(o.rateMeterEvents),
    stream: new TokenBucket(o.rateStream),
    default: new TokenBucket(o.rateDefault),
  };
  const idempotent = new Map<string, Routed>();
  const hooks = new WebhookOut(o.webhook ?? null);
  seedPrices(ctx, o.seedPrices ?? [], Math.floor(Date.now() / 1000));

  /** `expire_sessions` is a one-shot switch: every token issued so far expires now; new ones work. */
  function setFaults(update: unknown): Faults {
    faults = applyFaults(faults, update);
    if (faults.expire_sessions) {
      for (const s of Object.values(data.sessions)) s.expires_at = 0;
      faults = { ...faults, expire_sessions: false };
    }
    return faults;
  }

  const metrics = new MetricsRegistry();
  const counters = {
    requests: metrics.counter('stripe_local_requests_total', 'API requests answered.'),
    limited: metrics.counter('stripe_local_rate_limited_total', 'Requests answered 429 rate_limit (limiter or storm).'),
    faults: metrics.counter('stripe_local_faults_injected_total', 'Requests given an injected 5xx or timeout.'),
    events: metrics.counter('stripe_local_meter_events_total', 'Meter events accepted.'),
  };

  function classOf(path: string): RouteClass {
    if (path === '/v1/billing/meter_events') return 'meter_events';
    if (path === '/v2/billing/meter_event_stream') return 'stream';
    return 'default';
  }

  function authorize(req: IncomingMessage): void {
    const h = req.headers.authorization;
    const key = h?.startsWith('Bearer ') ? h.slice(7) : undefined;
    if (key === undefined || key === '') {
      throw new StripeHttpError(401, 'invalid_request_error', 'You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth.');
    }
    const okKey = o.apiKey === '' ? /^(sk|rk)_(test|live)_/.test(key) : key === o.apiKey;
    if (!okKey) throw new StripeHttpError(401, 'invalid_request_error', 'Invalid API Key provided.', 'api_key_invalid');
  }

  async function control(req: IncomingMessage, res: ServerResponse, path: string): Promise<boolean> {
    if (path === '/healthz' || path === '/readyz') { send(res, 200, '{"status":"ok"}'); return true; }
    if (path === '/metrics') {
      const body = metrics.render();
      res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4', 'Content-Length': Buffer.byteLength(body) }).end(body);
      return true;
    }
    if (path === '/_faults') {
      if (req.method === 'POST') setFaults(JSON.parse((await readBody(req)) || '{}'));
      send(res, 200, JSON.stringify(faults));
      return true;
    }
    if (path === '/_reset' && req.method === 'POST') {
      data = emptyState();
      changed();
      send(res, 200, '{}');
      return true;
    }
    if (path === '/_state' && req.method === 'GET') {
      const evs = Object.values(data.events);
      send(res, 200, JSON.stringify({
        customers: Object.keys(data.customers).length, meters: Object.keys(data.meters).length,
        events: evs.length, cancelled: evs.filter((e) => e.cancelled).length, sessions: Object.keys(data.sessions).length,
        stream_errors: data.streamErrors.slice(-100),
      }));
      return true;
    }
    if (path === '/_webhooks/send' && req.method === 'POST') {
      send(res, 200, JSON.stringify(await sendWebhook(JSON.parse(await readBody(req)) as WebhookRequest)));
      return true;
    }
    if (await checkoutControl(ctx, hooks, req, res, path)) return true;
    const portal = /^\/p\/session\/(bps_[A-Za-z0-9]+)$/.exec(path);
    if (portal && req.method === 'GET') {
      res.writeHead(200, { 'Content-Type': 'text/html' }).end(`<!doctype html><title>Billing portal (stripe-local)</title><p>Billing portal session ${portal[1]}</p>`);
      return true;
    }
    return false;
  }

  async function api(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const path = url.pathname;
    const faulty = FAULTY.has(path);
    const now = Date.now();
    if (faulty && (now < faults.rate_limit_until || Math.random() < faults.rate_limit_rate)) {
      counters.limited.inc();
      throw rateLimited();
    }
    if (!buckets[classOf(path)].take()) {
      counters.limited.inc();
      throw rateLimited();
    }
    const body = await readBody(req);
    const bearer = req.headers.authorization?.startsWith('Bearer ') ? req.headers.authorization.slice(7) : undefined;
    if (path !== '/v2/billing/meter_event_stream') authorize(req);
    if (faulty && Math.random() < faults.error_rate) {
      counters.faults.inc();
      throw new StripeHttpError(500, 'api_error', 'An unknown error occurred (injected by stripe-local).', undefined, undefined, true);
    }
    const idemKey = req.method === 'POST' && path.startsWith('/v1/') ? req.headers['idempotency-key'] : undefined;
    const replay = typeof idemKey === 'string' ? idempotent.get(`${path}\n${idemKey}`) : undefined;
    if (replay !== undefined) { send(res, replay.status, replay.body, { 'Idempotent-Replayed': 'true' }); return; }

    const r: Request = { method: req.method ?? 'GET', path, query: url.searchParams, body, nowS: Math.floor(now / 1000) };
    const before = Object.keys(data.events).length;
    let routed: Routed | undefined;
    if (path === '/v2/billing/meter_event_stream' && r.method === 'POST') {
      routed = routeStream(ctx, r, bearer, false);
    } else if (path.startsWith('/v1/')) routed = routeV1(ctx, r) ?? routeCheckout(ctx, hooks, r);
    else if (path.startsWith('/v2/')) routed = routeV2(ctx, r);
    if (routed === undefined) throw new StripeHttpError(404, 'invalid_request_error', `Unrecognized request URL (${r.method}: ${path}).`);
    counters.events.inc(Object.keys(data.events).length - before);
    if (typeof idemKey === 'string') idempotent.set(`${path}\n${idemKey}`, routed);

    // Faults after the work is done: the change is stored, but the client never learns it.
    if (faulty && Math.random() < faults.timeout_rate) {
      counters.faults.inc();
      setTimeout(() => res.destroy(), faults.timeout_ms).unref();
      return;
    }
    if (faulty && Math.random() < faults.applied_error_rate) {
      counters.faults.inc();
      throw new StripeHttpError(500, 'api_error', 'An unknown error occurred (injected by stripe-local, after storing).', undefined, undefined, true);
    }
    send(res, routed.status, routed.body, { 'Stripe-Version': '2024-09-30.acacia' });
  }

  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://stripe-local');
    counters.requests.inc();
    void (async () => {
      try {
        if (await control(req, res, url.pathname)) return;
        await api(req, res, url);
      } catch (err) {
        if (err instanceof StripeHttpError) sendError(res, err);
        else if (err instanceof SyntaxError) sendError(res, new StripeHttpError(400, 'invalid_request_error', `Invalid JSON: ${err.message}`));
        else sendError(res, new StripeHttpError(500, 'api_error', 'An unknown error occurred.'));
      }
    })();
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  baseUrl = `http://${o.host}:${addr.port}`;
  file?.start(() => data);

  return {
    url: baseUrl,
    state: () => data,
    faults: () => faults,
    setFaults,
    async close() {
      await new Promise<void>((resolve) => { server.close(() => resolve()); server.closeAllConnections(); });
      await hooks.close();
      await file?.stop(data);
    },
  };
}

export interface WebhookRequest {
  /** Where to POST the event (e.g. control-api's /webhooks/stripe). */
  url: string;
  /** The endpoint's signing secret (whsec_…). */
  secret: string;
  /** Stripe event type, e.g. customer.subscription.updated. */
  type: string;
  /** The event's data.object. */
  object: Record<string, unknown>;
  previous_attributes?: Record<string, unknown>;
}

/** Sends one Stripe-shaped event, signed as Stripe signs webhooks, and reports the receiver's answer. */
export async function sendWebhook(w: WebhookRequest): Promise<{ id: string; status: number; body: string }> {
  if (typeof w?.url !== 'string' || typeof w.secret !== 'string' || typeof w.type !== 'string' || typeof w.object !== 'object') {
    throw new StripeHttpError(400, 'invalid_request_error', 'url, secret, type and object are required.');
  }
  const { id, body } = stripeEventBody(w.type, w.object, w.previous_attributes);
  const res = await fetch(w.url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json; charset=utf-8', 'Stripe-Signature': stripeSignature(w.secret, body), 'User-Agent': 'Stripe/1.0 (+https://stripe.com/docs/webhooks)' },
    body,
    signal: AbortSignal.timeout(10_000),
  });
  return { id, status: res.status, body: (await res.text()).slice(0, 2_000) };
}
