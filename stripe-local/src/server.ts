import type { FastifyError } from 'fastify';
import { MetricsRegistry } from '@meterd/core/metrics';
import { createServiceApp, listenOn } from '@meterd/core/http';
import { stripeApi } from './api.js';
import { Billing } from './billing.js';
import { ErrorReports } from './error-reports.js';
import { EventsOut, signedPost, snapshotEvent } from './events-out.js';
import { Recorder } from './recorder.js';
import { eventRoutes } from './routes-events.js';
import { applyFaults, NO_FAULTS, type Faults } from './faults.js';
import { MAX_BODY, send, sendError } from './http-util.js';
import { v1Routes } from './routes-v1.js';
import { v2Routes } from './routes-v2.js';
import { StateFile, emptyState, type StateData } from './state.js';
import { asV2, StripeHttpError } from './stripe-error.js';
import { checkoutRoutes, seedPrices, type PriceSeed } from './routes-checkout.js';
import { checkoutControl } from './checkout-control.js';
import type { Context } from './context.js';

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
    {
      identifierWindowS: o.identifierWindowHours * 3_600,
      checkCustomers: o.checkCustomers ?? true,
      refuseUnknownCustomersV1: () => faults.v1_refuse_unknown_customers,
    },
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
  const requests = metrics.counter('stripe_local_requests_total', 'API requests answered.');
  const answer = stripeApi(ctx, {
    apiKey: o.apiKey,
    rateMeterEvents: o.rateMeterEvents,
    rateStream: o.rateStream,
    rateDefault: o.rateDefault,
    rateTest: o.rateTestMode ?? 25,
    faults: () => faults,
    recorder,
    counters: {
      limited: metrics.counter(
        'stripe_local_rate_limited_total',
        'Requests answered 429 rate_limit (limiter or storm).',
      ),
      faults: metrics.counter('stripe_local_faults_injected_total', 'Requests given an injected 5xx or timeout.'),
      events: metrics.counter('stripe_local_meter_events_total', 'Meter events accepted.'),
    },
  });

  const app = createServiceApp(
    { ...(o.draining === undefined ? {} : { draining: o.draining }), metrics: () => metrics.render() },
    {
      bodyLimit: MAX_BODY,
      keepAliveTimeout: 60_000,
      // A request held open by the timeout fault must not hold close() up.
      forceCloseConnections: true,
      // Stripe answers HEAD like any unknown route; ids may be long.
      exposeHeadRoutes: false,
      routerOptions: { maxParamLength: 1_000 },
    },
  );
  // Bodies stay text, whatever their type: v1 reads them as forms, v2 as JSON, each in its routes.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => done(null, body));
  app.addHook('onRequest', async () => requests.inc());
  app.setErrorHandler(async (err: FastifyError, req, reply) => {
    const e =
      err instanceof StripeHttpError
        ? err
        : err instanceof SyntaxError
          ? new StripeHttpError(400, 'invalid_request_error', `Invalid JSON: ${err.message}`)
          : err.code === 'FST_ERR_CTP_BODY_TOO_LARGE'
            ? new StripeHttpError(413, 'invalid_request_error', 'Request body too large.')
            : new StripeHttpError(500, 'api_error', 'An unknown error occurred.');
    // API v2 answers errors in its own shape.
    return sendError(reply, req.url.startsWith('/v2/') ? asV2(e) : e);
  });
  app.setNotFoundHandler((req, reply) => answer(req, reply));
  for (const route of [...v1Routes, ...checkoutRoutes, ...v2Routes, ...eventRoutes])
    app.route({ method: route.method, url: route.url, handler: (req, reply) => answer(req, reply, route) });

  // Test controls (not Stripe's API): faults, the clock, state, webhooks, the hosted pages.
  app.all('/_faults', async (req, reply) => {
    if (req.method === 'POST') setFaults(JSON.parse((req.body as string | undefined) || '{}'));
    return send(reply, 200, JSON.stringify(faults));
  });
  app.post('/_clock', async (req, reply) => {
    const b = JSON.parse((req.body as string | undefined) || '{}') as { advance_seconds?: unknown };
    if (typeof b.advance_seconds !== 'number' || !Number.isInteger(b.advance_seconds) || b.advance_seconds < 0) {
      throw new StripeHttpError(
        400,
        'invalid_request_error',
        'advance_seconds must be a whole number of seconds, 0 or more.',
      );
    }
    clockOffsetS += b.advance_seconds;
    return send(reply, 200, JSON.stringify({ now: nowS(), offset_seconds: clockOffsetS }));
  });
  app.post('/_reset', async (_req, reply) => {
    data = emptyState();
    changed();
    return send(reply, 200, '{}');
  });
  app.get('/_state', async (_req, reply) => {
    const evs = Object.values(data.events);
    return send(
      reply,
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
  });
  app.post('/_webhooks/send', async (req, reply) =>
    send(reply, 200, JSON.stringify(await sendWebhook(JSON.parse(req.body as string) as WebhookRequest))),
  );
  checkoutControl(app, ctx, answer);
  app.get<{ Params: { id: string } }>('/p/session/:id', async (req, reply) => {
    if (!/^bps_[A-Za-z0-9]+$/.test(req.params.id)) return answer(req, reply);
    return reply
      .type('text/html')
      .send(
        `<!doctype html><title>Billing portal (stripe-local)</title><p>Billing portal session ${req.params.id}</p>`,
      );
  });

  const port = await listenOn(app, o.port, o.host);
  baseUrl = `http://${o.host}:${port}`;
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
      await app.close();
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
