import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { METRICS_CONTENT_TYPE, MetricsRegistry } from '@meterd/core';
import { Billing } from './billing.js';
import { ErrorReports } from './error-reports.js';
import { EventsOut, signedPost, snapshotEvent } from './events-out.js';
import { Recorder } from './recorder.js';
import { routeEvents } from './routes-events.js';
import { applyFaults, NO_FAULTS, type Faults } from './faults.js';
import { readBody, send, sendError } from './http-util.js';
import { TokenBucket } from './rate-limit.js';
import { routeV1 } from './routes-v1.js';
import { routeStream, routeV2 } from './routes-v2.js';
import { StateFile, emptyState, type StateData } from './state.js';
import { asV2, rateLimited, StripeHttpError } from './stripe-error.js';
import { routeCheckout, seedPrices, type PriceSeed } from './routes-checkout.js';
import { checkoutControl } from './checkout-control.js';
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
  /** Requests per second for test keys (`sk_test_…`/`rk_test_…`) on every route but the stream; 0: test keys get the live limits. Default 25 (Stripe's test mode). */
  rateTestMode?: number;
  /** Where emitted events are POSTed, signed with `webhookSecret`; empty: stored only. */
  webhookUrl?: string;
  webhookSecret?: string;
  /** Length of a meter error report's validation window (Stripe's reports cover about 10 s). */
  errorReportWindowMs?: number;
  /** Refuse (asynchronously, with an error report) events for customers stripe-local does not know. Default true. */
  checkCustomers?: boolean;
  /** Record every returned object here (see recorder.ts); empty: off. */
  recordDir?: string;
  /** Logs failed webhook deliveries. */
  onWebhookError?: (e: { id: string; type: string; attempt: number; status?: number; message: string }) => void;
  /** Prices created at start unless an active price already has their lookup key. */
  seedPrices?: PriceSeed[];
  /** Aborted once the process drains: /readyz answers 503. */
  draining?: AbortSignal;
}

type RouteClass = 'meter_events' | 'stream' | 'default' | 'test';

/** Routes where fault switches apply: the meter event paths billing-sync depends on. */
const FAULTY = new Set([
  '/v1/billing/meter_events',
  '/v1/billing/meter_event_adjustments',
  '/v2/billing/meter_event_session',
  '/v2/billing/meter_event_stream',
  '/v2/billing/meter_events',
  '/v2/billing/meter_event_adjustments',
]);

export interface StripeLocal {
  url: string;
  state: () => StateData;
  faults: () => Faults;
  setFaults(update: unknown): Faults;
  /** Moves stripe-local's clock forward (dedupe, cancel and session windows, timestamps), as a test clock would. */
  advanceClock(seconds: number): void;
  /** Emits the meter error reports gathered so far without waiting for the window to end. */
  flushErrorReports(): void;
  close(): Promise<void>;
}

export async function startStripeLocal(o: StripeLocalOptions): Promise<StripeLocal> {
  const file =
    o.stateFile === ''
      ? undefined
      : new StateFile(o.stateFile, (err) => console.error('stripe-local: saving the state file failed; retrying', err));
  let data = file ? await file.load() : emptyState();
  let faults: Faults = applyFaults({ ...NO_FAULTS }, o.faults);
  let baseUrl = '';
  const changed = (): void => file?.markDirty();
  let clockOffsetS = 0;
  const nowS = (): number => Math.floor(Date.now() / 1000) + clockOffsetS;
  const recorder = o.recordDir ? new Recorder(o.recordDir) : undefined;
  const events = new EventsOut(() => data, changed, {
    url: o.webhookUrl ?? '',
    secret: o.webhookSecret ?? '',
    nowS,
    onDeliveryError: o.onWebhookError,
    sent: (body, where) => recorder?.record(body, where),
  });
  const reports = new ErrorReports(events, o.errorReportWindowMs ?? 10_000, nowS);
  const billing = new Billing(
    () => data,
    { identifierWindowS: o.identifierWindowHours * 3_600, checkCustomers: o.checkCustomers ?? true },
    changed,
    reports,
  );
  let stopped = false;
  const later = (work: () => void): void => {
    setImmediate(() => {
      if (!stopped) work();
    });
  };
  const ctx: Context = {
    data: () => data,
    billing,
    changed,
    baseUrl: () => baseUrl,
    sessionTtlS: o.sessionTtlSeconds,
    events,
    nowS,
    later,
  };
  const rateTest = o.rateTestMode ?? 25;
  const buckets: Record<RouteClass, TokenBucket> = {
    meter_events: new TokenBucket(o.rateMeterEvents),
    stream: new TokenBucket(o.rateStream),
    default: new TokenBucket(o.rateDefault),
    test: new TokenBucket(Math.max(rateTest, 1)),
  };
  const idempotent = new Map<string, Routed>();
  seedPrices(ctx, o.seedPrices ?? [], nowS());

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

  /**
   * Stripe's limits (https://docs.stripe.com/rate-limits): live mode 100/s basic, meter events
   * 1,000/s apart from it, the stream 10,000/s; test mode 25/s basic, meter event calls included
   * in it. The stream is authenticated by a session, not a key, and keeps its own limit.
   */
  function classOf(path: string, key: string | undefined): RouteClass {
    if (path === '/v2/billing/meter_event_stream') return 'stream';
    if (rateTest > 0 && key !== undefined && /^(sk|rk)_test_/.test(key)) return 'test';
    if (path === '/v1/billing/meter_events') return 'meter_events';
    return 'default';
  }

  function authorize(req: IncomingMessage): void {
    const h = req.headers.authorization;
    const key = h?.startsWith('Bearer ') ? h.slice(7) : undefined;
    if (key === undefined || key === '') {
      throw new StripeHttpError(
        401,
        'invalid_request_error',
        'You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth.',
      );
    }
    const okKey = o.apiKey === '' ? /^(sk|rk)_(test|live)_/.test(key) : key === o.apiKey;
    if (!okKey) throw new StripeHttpError(401, 'invalid_request_error', 'Invalid API Key provided.', 'api_key_invalid');
  }

  async function control(req: IncomingMessage, res: ServerResponse, path: string): Promise<boolean> {
    if (path === '/healthz') {
      send(res, 200, '{"status":"ok"}');
      return true;
    }
    if (path === '/readyz') {
      const draining = o.draining?.aborted === true;
      send(res, draining ? 503 : 200, draining ? '{"status":"draining"}' : '{"status":"ready"}');
      return true;
    }
    if (path === '/metrics') {
      const body = metrics.render();
      res.writeHead(200, { 'Content-Type': METRICS_CONTENT_TYPE, 'Content-Length': Buffer.byteLength(body) }).end(body);
      return true;
    }
    if (path === '/_faults') {
      if (req.method === 'POST') setFaults(JSON.parse((await readBody(req)) || '{}'));
      send(res, 200, JSON.stringify(faults));
      return true;
    }
    if (path === '/_clock' && req.method === 'POST') {
      const b = JSON.parse((await readBody(req)) || '{}') as { advance_seconds?: unknown };
      if (typeof b.advance_seconds !== 'number' || !Number.isInteger(b.advance_seconds) || b.advance_seconds < 0) {
        throw new StripeHttpError(
          400,
          'invalid_request_error',
          'advance_seconds must be a whole number of seconds, 0 or more.',
        );
      }
      clockOffsetS += b.advance_seconds;
      send(res, 200, JSON.stringify({ now: nowS(), offset_seconds: clockOffsetS }));
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
      send(
        res,
        200,
        JSON.stringify({
          customers: Object.keys(data.customers).length,
          meters: Object.keys(data.meters).length,
          events: evs.length,
          cancelled: evs.filter((e) => e.cancelled).length,
          sessions: Object.keys(data.sessions).length,
          stream_errors: data.streamErrors.slice(-100),
        }),
      );
      return true;
    }
    if (path === '/_webhooks/send' && req.method === 'POST') {
      send(res, 200, JSON.stringify(await sendWebhook(JSON.parse(await readBody(req)) as WebhookRequest)));
      return true;
    }
    if (await checkoutControl(ctx, req, res, path)) return true;
    const portal = /^\/p\/session\/(bps_[A-Za-z0-9]+)$/.exec(path);
    if (portal && req.method === 'GET') {
      res
        .writeHead(200, { 'Content-Type': 'text/html' })
        .end(`<!doctype html><title>Billing portal (stripe-local)</title><p>Billing portal session ${portal[1]}</p>`);
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
    const bearer = req.headers.authorization?.startsWith('Bearer ') ? req.headers.authorization.slice(7) : undefined;
    if (!buckets[classOf(path, bearer)].take()) {
      counters.limited.inc();
      throw rateLimited();
    }
    const body = await readBody(req);
    if (path !== '/v2/billing/meter_event_stream') authorize(req);
    if (faulty && Math.random() < faults.error_rate) {
      counters.faults.inc();
      throw new StripeHttpError(
        500,
        'api_error',
        'An unknown error occurred (injected by stripe-local).',
        undefined,
        undefined,
        true,
      );
    }
    const idemKey = req.method === 'POST' && path.startsWith('/v1/') ? req.headers['idempotency-key'] : undefined;
    const replay = typeof idemKey === 'string' ? idempotent.get(`${path}\n${idemKey}`) : undefined;
    if (replay !== undefined) {
      send(res, replay.status, replay.body, { 'Idempotent-Replayed': 'true' });
      return;
    }

    const r: Request = { method: req.method ?? 'GET', path, query: url.searchParams, body, nowS: nowS() };
    const before = Object.keys(data.events).length;
    let routed: Routed | undefined;
    if (path === '/v2/billing/meter_event_stream' && r.method === 'POST') {
      routed = routeStream(ctx, r, bearer, false);
    } else if (path.startsWith('/v1/')) routed = routeV1(ctx, r) ?? routeCheckout(ctx, r) ?? routeEvents(ctx, r);
    else if (path.startsWith('/v2/')) routed = routeV2(ctx, r) ?? routeEvents(ctx, r);
    if (routed === undefined)
      throw new StripeHttpError(404, 'invalid_request_error', `Unrecognized request URL (${r.method}: ${path}).`);
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
      throw new StripeHttpError(
        500,
        'api_error',
        'An unknown error occurred (injected by stripe-local, after storing).',
        undefined,
        undefined,
        true,
      );
    }
    recorder?.record(routed.body, `${r.method} ${path}`);
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
        // API v2 answers errors in its own shape.
        if (err instanceof StripeHttpError) sendError(res, url.pathname.startsWith('/v2/') ? asV2(err) : err);
        else if (err instanceof SyntaxError)
          sendError(res, new StripeHttpError(400, 'invalid_request_error', `Invalid JSON: ${err.message}`));
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
    advanceClock(seconds) {
      clockOffsetS += seconds;
    },
    flushErrorReports() {
      reports.flush();
    },
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      stopped = true;
      reports.close();
      await events.close();
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
export async function sendWebhook(w: WebhookRequest): Promise<{ id: string; status: number | null; body: string }> {
  if (
    typeof w?.url !== 'string' ||
    typeof w.secret !== 'string' ||
    typeof w.type !== 'string' ||
    typeof w.object !== 'object'
  ) {
    throw new StripeHttpError(400, 'invalid_request_error', 'url, secret, type and object are required.');
  }
  const event = snapshotEvent(w.type, w.object, Math.floor(Date.now() / 1000), w.previous_attributes, 1);
  const d = await signedPost(w.url, w.secret, event.id, w.type, JSON.stringify(event));
  return { id: event.id, status: d.status, body: d.body ?? d.error ?? '' };
}
