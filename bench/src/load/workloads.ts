import type { AcRequest } from 'autocannon';
import type { Scenario } from '../args.js';
import { benchProperties } from '../stack/meters.js';
import { KeyTracker } from './tracker.js';

/** A workspace the load generator meters for, with the key it sends. */
export interface Tenant {
  workspaceId: string;
  token: string;
}

/** Counters the load generator keeps from response bodies, read once a second by the sampler. */
export interface AckCounters {
  stored: number;
  duplicate: number;
  rejected: number;
}

export interface Workload {
  scenario: Scenario;
  /** What a generator other than autocannon needs to build the same requests (wrk-load.lua). */
  tenants: readonly Tenant[];
  occurredAt: string;
  tracker: KeyTracker;
  counters: AckCounters;
  requests: AcRequest[];
  /** For the report: what one request carries. */
  describe: string;
  /** Events carry `properties` (benchProperties), for the meters of --meters. */
  properties: boolean;
}

interface InFlight {
  n: number;
  count: number;
  batch: boolean;
}
type Context = { q?: InFlight[] };

export const BATCH_SIZE = 100;
const MIXED_BATCH_SIZE = 20;
/** Retries pick among this many most recent keys, so most land after the original was stored. */
const RECENT = 4096;

const SINGLE_PATH = '/api/v1/meter';
const BATCH_PATH = '/api/v1/meter/batch';

/**
 * Builds the autocannon request list for a scenario. Every request gets fresh idempotency keys in
 * setupRequest (autocannon's idReplacement does not work for POST bodies); each connection keeps a
 * FIFO of the keys it has in flight, so onResponse knows which keys the answer acknowledges.
 */
export function buildWorkload(
  scenario: Scenario,
  tag: string,
  tenants: readonly Tenant[],
  occurredAt: string,
  opts: { properties?: boolean } = {},
): Workload {
  const properties = opts.properties === true;
  const tracker = new KeyTracker(tag);
  const counters: AckCounters = { stored: 0, duplicate: 0, rejected: 0 };
  const headersOf = tenants.map((t) => ({ authorization: `Bearer ${t.token}`, 'content-type': 'application/json' }));
  const eventText = (ws: string, n: number, i: number): string =>
    `{"workspace_id":"${ws}","event_type":"checkout.completed","quantity":1,"gmv_cents":${1000 + (i % 9000)},"currency":"USD","idempotency_key":"${tracker.key(n)}","occurred_at":"${occurredAt}"${properties ? `,${benchProperties(n)}` : ''}}`;

  const recent = new Int32Array(RECENT);
  let recentFill = 0;
  let t = 0;
  const pickTenant = (): number => (tenants.length === 1 ? 0 : (t = (t + 7919) % tenants.length));

  const single = (req: AcRequest, ctx: Context, ti: number, n: number): AcRequest => {
    (ctx.q ??= []).push({ n, count: 1, batch: false });
    req.method = 'POST';
    req.path = SINGLE_PATH;
    req.headers = headersOf[ti]!;
    req.body = eventText(tenants[ti]!.workspaceId, n, n);
    return req;
  };
  const batch = (req: AcRequest, ctx: Context, ti: number, size: number): AcRequest => {
    const first = tracker.fresh();
    const ws = tenants[ti]!.workspaceId;
    let body = `{"events":[${eventText(ws, first, first)}`;
    for (let i = 1; i < size; i++) {
      const n = tracker.fresh();
      body += ',' + eventText(ws, n, n);
    }
    (ctx.q ??= []).push({ n: first, count: size, batch: true });
    req.method = 'POST';
    req.path = BATCH_PATH;
    req.headers = headersOf[ti]!;
    req.body = body + ']}';
    return req;
  };

  let setup: (req: AcRequest, ctx: Context) => AcRequest;
  let describe: string;
  switch (scenario) {
    case 'single':
    case 'quota':
      describe =
        scenario === 'quota'
          ? 'one event per request to a free-plan workspace (500 events/period)'
          : 'one event per request';
      setup = (req, ctx) => single(req, ctx, 0, tracker.fresh());
      break;
    case 'batch':
    case 'soak':
      describe = `${BATCH_SIZE} events per request`;
      setup = (req, ctx) => batch(req, ctx, 0, BATCH_SIZE);
      break;
    case 'duplicates':
      describe = 'one event per request, half of them retries of a recently sent key';
      setup = (req, ctx) => {
        if (recentFill > 0 && Math.random() < 0.5)
          return single(req, ctx, 0, recent[Math.floor(Math.random() * Math.min(recentFill, RECENT))]!);
        const n = tracker.fresh();
        recent[recentFill++ % RECENT] = n;
        return single(req, ctx, 0, n);
      };
      break;
    case 'mixed':
      describe = `${tenants.length} workspaces; 80 % single events, 20 % batches of ${MIXED_BATCH_SIZE}`;
      setup = (req, ctx) =>
        Math.random() < 0.8
          ? single(req, ctx, pickTenant(), tracker.fresh())
          : batch(req, ctx, pickTenant(), MIXED_BATCH_SIZE);
      break;
  }

  const keyMarker = `"idempotency_key":"${tag}-`;
  const onResponse = (status: number, body: string, ctx: Context): void => {
    let f = ctx.q?.shift();
    if (f === undefined) return;
    if (status === 202 && !f.batch) {
      // A reconnect (timeout, reset) drops answers autocannon had in flight; re-align on the key.
      const n = keyIndexIn(String(body), keyMarker);
      while (n !== f.n && ctx.q!.length > 0) f = ctx.q!.shift()!;
      tracker.ack(n);
      if (body.includes('"duplicate":true')) counters.duplicate++;
      else counters.stored++;
      return;
    }
    if (status === 202) return ackBatch(f, String(body));
    counters.rejected += f.count;
    // 409 idempotency_key_in_use says another request holds the key: nothing about storage.
    if (status !== 409) for (let i = 0; i < f.count; i++) tracker.refuse(f.n + i);
  };
  const ackBatch = (f: InFlight, body: string): void => {
    const head = /^\{"accepted":(\d+),"duplicates":(\d+),"rejected":(\d+)/.exec(body);
    if (head !== null && head[3] === '0') {
      for (let i = 0; i < f.count; i++) tracker.ack(f.n + i);
      counters.stored += Number(head[1]);
      counters.duplicate += Number(head[2]);
      return;
    }
    let doc: { results?: { index: number; status: number; duplicate?: boolean }[] } = {};
    try {
      doc = JSON.parse(body) as typeof doc;
    } catch {
      // not JSON: handled below like any body without per-event results
    }
    if (!Array.isArray(doc.results)) {
      // A 202 without per-event results (the bare-uWS ceiling): every event counts as taken.
      for (let i = 0; i < f.count; i++) tracker.ack(f.n + i);
      counters.stored += f.count;
      return;
    }
    for (const r of doc.results) {
      if (r.status === 202) {
        tracker.ack(f.n + r.index);
        if (r.duplicate) counters.duplicate++;
        else counters.stored++;
      } else {
        counters.rejected++;
        if (r.status !== 409) tracker.refuse(f.n + r.index);
      }
    }
  };

  return {
    scenario,
    tenants,
    occurredAt,
    tracker,
    counters,
    describe: properties ? `${describe}, with properties` : describe,
    properties,
    requests: [
      {
        method: 'POST',
        path: scenario === 'batch' ? BATCH_PATH : SINGLE_PATH,
        setupRequest: setup as AcRequest['setupRequest'],
        // An exception here would surface inside autocannon's HTTP parser and kill the run.
        onResponse: ((status: number, body: string, ctx: Context) => {
          try {
            onResponse(status, body, ctx);
          } catch {
            counters.rejected++;
          }
        }) as AcRequest['onResponse'],
      },
    ],
  };
}

/** The n of `"idempotency_key":"<tag>-<n>"` in a 202 body, or -1. */
function keyIndexIn(body: string, marker: string): number {
  const at = body.indexOf(marker);
  if (at < 0) return -1;
  return parseInt(body.slice(at + marker.length, body.indexOf('"', at + marker.length)), 10);
}
