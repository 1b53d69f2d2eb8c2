import { spawn, type ChildProcess } from 'node:child_process';
import { after, before } from 'node:test';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import Stripe from 'stripe';
import { insertEventBatch } from '@meterd/core/clickhouse';
import { createLogger, type Logger } from '@meterd/core/log';
import { insertWorkspace } from '@meterd/core/store';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { loadBillingConfig, type BillingConfig } from '../src/config.js';
import { createBillingMetrics, type BillingMetrics } from '../src/metrics.js';
import { createStripe } from '../src/stripe/client.js';
import { ClickHouseRawUsage } from '../src/usage/clickhouse-raw.js';
import type { ClickHouseRollupUsage } from '../src/usage/clickhouse-rollups.js';
import { BillingWorker } from '../src/worker.js';
import { meterEventName } from '../src/meters.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
export const STRIPE_LOCAL_MAIN = `${REPO}stripe-local/dist/src/main.js`;
export const BILLING_MAIN = `${REPO}billing-sync/dist/src/main.js`;
export const AGGREGATOR_MAIN = `${REPO}aggregator/dist/src/main.js`;
export const INGEST_MAIN = `${REPO}ingest/dist/src/main.js`;
export const RECONCILE_MAIN = `${REPO}billing-sync/dist/src/reconcile-cli.js`;
export const KEY = 'sk_test_billing';

/** stripe-local as its own process (as in `npm start`), on a random port read from its start-up log line. */
export interface LocalStripe {
  url: string;
  port: number;
  stripe: Stripe;
  faults(f: Record<string, unknown>): Promise<void>;
  metric(name: string): Promise<number>;
  close(): Promise<void>;
}

export async function startLocalStripe(env: Record<string, string> = {}): Promise<LocalStripe> {
  const child = spawn(process.execPath, [STRIPE_LOCAL_MAIN], {
    env: { ...process.env, STRIPE_LOCAL_PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (l) => {
      try {
        const j = JSON.parse(l) as { url?: string };
        if (j.url) resolve(j.url);
      } catch {
        /* not JSON */
      }
    });
    child.once('exit', (c) => reject(new Error(`stripe-local exited with ${c}`)));
  });
  const port = Number(new URL(url).port);
  return {
    url,
    port,
    stripe: new Stripe(KEY, { host: '127.0.0.1', port, protocol: 'http', maxNetworkRetries: 0 }),
    async faults(f) {
      await fetch(`${url}/_faults`, { method: 'POST', body: JSON.stringify(f) });
    },
    async metric(name) {
      const text = await (await fetch(`${url}/metrics`)).text();
      const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
      return m ? Number(m[1]) : NaN;
    },
    async close() {
      // A child that already exited emits no second 'exit': waiting for one would hang.
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    },
  };
}

export function billingEnv(
  stores: TestStores,
  local: LocalStripe | undefined,
  extra: Record<string, string> = {},
): Record<string, string> {
  return {
    ...stores.env,
    LOG_LEVEL: 'warn',
    BILLING_SYNC_PORT: '0',
    ...(local ? { STRIPE_SECRET_KEY: KEY, STRIPE_API_BASE: local.url } : { STRIPE_SECRET_KEY: '' }),
    // These tests write `events` directly; the rollup source, which needs the aggregator, has its own tests.
    BILLING_USAGE_SOURCE: 'raw',
    BILLING_CLOSE_DELAY_SECONDS: '0',
    BILLING_ENSURE_METERS: 'true',
    BILLING_METER_VALUES: 'api.call=quantity',
    STRIPE_RETRY_BASE_MS: '20',
    STRIPE_RETRY_MAX_MS: '200',
    ...extra,
  };
}

export function billingConfig(env: Record<string, string>): BillingConfig {
  return loadBillingConfig(env);
}

/** The total each event type is billed by under billingEnv's BILLING_METER_VALUES. */
export const valueField = (type: string): 'gmv_cents' | 'quantity' => (type === 'api.call' ? 'quantity' : 'gmv_cents');

/**
 * A workspace billed to a customer: one created at `customer` (stripe-local's SDK), or the id given
 * (synthetic, for a stripe-local with STRIPE_LOCAL_CHECK_CUSTOMERS=false or a missing customer).
 */
export async function workspaceFor(
  stores: TestStores,
  label: string,
  customer: Stripe | string,
): Promise<{ ws: string; customer: string }> {
  const id =
    typeof customer === 'string' ? customer : (await customer.customers.create({ email: `${label}@example.com` })).id;
  const w = await insertWorkspace(stores.pool, {
    slug: `${label}-${Date.now()}-${Math.floor(Math.random() * 1e6)}`,
    display_name: label,
    plan: 'growth',
    stripe_customer_id: id,
  });
  return { ws: w.id, customer: id };
}

/** `n` workspaces as workspaceFor makes them, workspace id → customer id; without `stripe`, customers `cus_<label>_<i>`. */
export async function workspacesFor(
  stores: TestStores,
  label: string,
  n: number,
  stripe?: Stripe,
): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (let i = 0; i < n; i++) {
    const { ws, customer } = await workspaceFor(stores, `${label}${i}`, stripe ?? `cus_${label}_${i}`);
    out.set(ws, customer);
  }
  return out;
}

/**
 * The file's stores (`openTestStores(name)`) and a stripe-local (`env` overrides its settings),
 * opened before the tests and closed after them; `set` receives them for the file's variables.
 */
export function withStoresAndStripe(
  name: string,
  env: Record<string, string>,
  set: (stores: TestStores, local: LocalStripe) => void,
): void {
  let stores: TestStores | undefined;
  let local: LocalStripe | undefined;
  before(async () => {
    stores = await openTestStores(name);
    local = await startLocalStripe(env);
    set(stores, local);
  });
  after(async () => {
    await local?.close();
    await stores?.close();
  });
}

/** A worker reading the raw `events` of `stores` and pushing to the Stripe `cfg` names. */
export function rawWorker(
  stores: TestStores,
  cfg: BillingConfig,
  metrics: BillingMetrics = createBillingMetrics(),
  log: Logger = createLogger('billing-test', 'silent'),
): BillingWorker {
  return new BillingWorker(
    stores.pool,
    new ClickHouseRawUsage(stores.clickhouse),
    createStripe(cfg),
    cfg,
    metrics,
    log,
  );
}

/** An `events` row as ingest writes it; `received_at` defaults to `occurred_at`, `event_id` to one derived from the key. */
export interface EventRow {
  workspace_id: string;
  event_type: string;
  idempotency_key: string;
  quantity: number;
  gmv_cents: number;
  occurred_at: number;
  currency?: string;
  received_at?: number;
  event_id?: string;
}

/** One checkout.completed of one unit, in USD unless `more` says otherwise. */
export const checkout = (ws: string, key: string, gmv: number, at: number, more: Partial<EventRow> = {}): EventRow => ({
  workspace_id: ws,
  event_type: 'checkout.completed',
  idempotency_key: key,
  quantity: 1,
  gmv_cents: gmv,
  occurred_at: at,
  ...more,
});

/**
 * Per workspace and hour from `from`, `perHour` checkout.completed and as many api.call events,
 * evenly spread over the hour; `currency` gives each checkout's currency by its place in the hour.
 */
export function hourlyEvents(
  workspaces: Iterable<string>,
  from: number,
  hours: number,
  perHour: number,
  currency: (slot: number) => string = () => 'USD',
): EventRow[] {
  const rows: EventRow[] = [];
  let k = 0;
  for (const ws of workspaces) {
    for (let h = 0; h < hours; h++) {
      for (let j = 0; j < perHour; j++) {
        const t = from + h * 3600 + j * Math.floor(3600 / perHour) + 7;
        rows.push(checkout(ws, `o${k++}`, 500 + k * 7, t, { currency: currency(j) }));
        rows.push({
          workspace_id: ws,
          event_type: 'api.call',
          idempotency_key: `a${k++}`,
          quantity: 2 + j,
          gmv_cents: 0,
          occurred_at: t,
        });
      }
    }
  }
  return rows;
}

/** One shipped batch (events and its record, as ingest's shipper writes them). */
export async function insertEvents(
  stores: TestStores,
  rows: EventRow[],
  batch?: { id: string; attempt: number },
): Promise<void> {
  const fmt = (s: number): string => new Date(s * 1000).toISOString().slice(0, 19).replace('T', ' ');
  await insertEventBatch(
    stores.clickhouse,
    rows.map((r) => ({
      workspace_id: r.workspace_id,
      event_type: r.event_type,
      idempotency_key: r.idempotency_key,
      event_id: r.event_id ?? `evt_${r.idempotency_key}`,
      quantity: r.quantity,
      gmv_cents: r.gmv_cents,
      currency: r.currency ?? 'USD',
      occurred_at: fmt(r.occurred_at),
      received_at: fmt(r.received_at ?? r.occurred_at),
    })),
    batch,
  );
}

/**
 * The ground truth, computed from the events the test wrote: each triple once (its first copy),
 * per workspace × Stripe meter (money meters per currency, unit meters over every currency).
 */
export function expectedTotals(
  rows: EventRow[],
  fromS: number,
  toS: number,
  field: (t: string) => 'gmv_cents' | 'quantity',
): Map<string, number> {
  const seen = new Set<string>();
  const out = new Map<string, number>();
  for (const r of rows) {
    const triple = `${r.workspace_id}\n${r.event_type}\n${r.idempotency_key}`;
    if (seen.has(triple)) continue;
    seen.add(triple);
    if (r.occurred_at < fromS || r.occurred_at >= toS) continue;
    const f = field(r.event_type);
    const k = `${r.workspace_id}\n${meterEventName(r.event_type, f === 'gmv_cents' ? (r.currency ?? 'USD') : '')}`;
    out.set(k, (out.get(k) ?? 0) + r[f]);
  }
  return out;
}

/** Stripe's (stripe-local's) summary for each workspace × meter event name over [from, to). */
export async function stripeTotals(
  stripe: Stripe,
  customers: Map<string, string>,
  types: string[],
  fromS: number,
  toS: number,
): Promise<Map<string, number>> {
  const meters = new Map<string, string>();
  for await (const m of stripe.billing.meters.list({ limit: 100 })) meters.set(m.event_name, m.id);
  const out = new Map<string, number>();
  for (const [ws, cus] of customers) {
    for (const t of types) {
      const id = meters.get(t);
      if (id === undefined) continue;
      // Paced under stripe-local's 100/s default limit: the check itself must not be rate-limited.
      await new Promise((r) => setTimeout(r, 12));
      const s = await stripe.billing.meters.listEventSummaries(id, { customer: cus, start_time: fromS, end_time: toS });
      const v = s.data.reduce((a, x) => a + x.aggregated_value, 0);
      if (v !== 0) out.set(`${ws}\n${t}`, v);
    }
  }
  return out;
}

/** Stripe's (stripe-local's) total of one meter event name for one customer over [from, to), an hour by default. */
export async function stripeTotal(
  stripe: Stripe,
  ws: string,
  customer: string,
  eventName: string,
  fromS: number,
  toS = fromS + 3600,
): Promise<number | undefined> {
  return (await stripeTotals(stripe, new Map([[ws, customer]]), [eventName], fromS, toS)).get(`${ws}\n${eventName}`);
}

export const hourFloor = (s: number): number => Math.floor(s / 3600) * 3600;

/** Now and the `hours` whole hours before the current one, [from, to), in Unix seconds. */
export function pastHours(hours: number): { now: number; from: number; to: number } {
  const now = Math.floor(Date.now() / 1000);
  const to = hourFloor(now);
  return { now, from: to - hours * 3600, to };
}

/** billing-sync's ledger rows `where` holds (an SQL condition on billing_pushes). */
export async function countPushes(stores: TestStores, where: string): Promise<number> {
  const { rows } = await stores.pool.query<{ n: string }>(
    `SELECT count(*)::text AS n FROM billing_pushes WHERE ${where}`,
  );
  return Number(rows[0]!.n);
}

/**
 * A service's built main.js as its own process (billing-sync may not import it), ready once it logs
 * a line containing `ready`; resolves with that line's JSON fields (its `url`).
 */
async function startChild(
  main: string,
  env: Record<string, string>,
  ready: string,
): Promise<{ url: string | undefined; close(): Promise<void> }> {
  const child = spawn(process.execPath, [main], {
    env: { ...process.env, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const line = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (l) => {
      if (l.includes(ready)) resolve(l);
    });
    child.once('exit', (c) => reject(new Error(`${main} exited with ${c}`)));
  });
  return {
    url: (JSON.parse(line) as { url?: string }).url,
    async close() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
    },
  };
}

/** The aggregator as its own process, rolling up the test stores' `events` every `AGGREGATOR_POLL_MS`. */
export async function startAggregator(env: Record<string, string>): Promise<{ close(): Promise<void> }> {
  return startChild(AGGREGATOR_MAIN, { AGGREGATOR_PORT: '0', ...env }, 'aggregator listening');
}

/** ingest as its own process on a free port: events go in over HTTP as a handler sends them. */
export async function startIngest(env: Record<string, string>): Promise<{ url: string; close(): Promise<void> }> {
  const c = await startChild(INGEST_MAIN, { INGEST_PORT: '0', ...env }, 'ingest listening');
  return { url: c.url!, close: () => c.close() };
}

/** billing-sync as its own process (the built main.js); `exited` settles with its exit code or signal. */
export function spawnBilling(env: Record<string, string>): {
  proc: ChildProcess;
  exited: Promise<number | string | null>;
} {
  const proc = spawn(process.execPath, [BILLING_MAIN], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const exited = new Promise<number | string | null>((resolve) =>
    proc.once('exit', (code, signal) => resolve(code ?? signal)),
  );
  return { proc, exited };
}

/** Waits until every shard of `source` has closed every hour up to now (its aggregator closes at once). */
export async function rolledUp(source: ClickHouseRollupUsage): Promise<void> {
  const since = Math.floor(Date.now() / 1000) + 2;
  await waitFor(
    'the aggregator to roll up and close every hour up to now',
    async () => ((await source.asOf(Number.MAX_SAFE_INTEGER)) ?? 0) >= since,
  );
}

/** Polls until `check` returns true (or fails the test after `ms`). */
export async function waitFor(what: string, check: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Runs a CLI (`npm run reconcile:stripe` is `node RECONCILE_MAIN`) to its exit; stdout and stderr together. */
export async function runCli(
  main: string,
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number | null; out: string }> {
  const child = spawn(process.execPath, [main, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => {
    out += b.toString('utf8');
  });
  child.stderr!.on('data', (b: Buffer) => {
    out += b.toString('utf8');
  });
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  return { code, out };
}

/**
 * stripe-local's usage of one Stripe meter for one customer per hour and group of `groupBy` (its
 * dimension payload keys), read through Stripe's Meter Usage Analytics API with the SDK:
 * `hour|v1|v2…` (the hour start, then the group's values in groupBy order) → value.
 */
export async function stripeGroupUsage(
  stripe: Stripe,
  eventName: string,
  customer: string,
  from: number,
  to: number,
  groupBy: readonly string[],
): Promise<Map<string, number>> {
  let meterId: string | undefined;
  for await (const m of stripe.billing.meters.list({ status: 'active', limit: 100 }))
    if (m.event_name === eventName) meterId = m.id;
  const out = new Map<string, number>();
  if (meterId === undefined) return out;
  // stripe-node 17's rawRequest takes GET parameters in the path only: Stripe's form encoding.
  const q = new URLSearchParams({
    customer,
    starts_at: String(from),
    ends_at: String(to),
    value_grouping_window: 'hour',
    'meters[0][meter]': meterId,
  });
  groupBy.forEach((k, i) => q.set(`meters[0][dimension_group_by_keys][${i}]`, k));
  const res = await stripe.rawRequest('GET', `/v1/billing/analytics/meter_usage?${q.toString()}`);
  const r = res as unknown as {
    rows: { data: Array<{ starts_at: number; value: number; dimensions: Record<string, string> }> };
  };
  for (const row of r.rows.data)
    if (row.value !== 0) out.set([row.starts_at, ...groupBy.map((k) => row.dimensions[k])].join('|'), row.value);
  return out;
}
