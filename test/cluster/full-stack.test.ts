import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Stripe from 'stripe';
import type { ClickHouseClient } from '@clickhouse/client';
import { clusterSettings, createClickHouse, lit } from '@meterd/core/clickhouse';
import { loadConfig, storeVars } from '@meterd/core/config';
import { quotaKey } from '@meterd/core/contracts';
import { migrateClickHouse } from '@meterd/core/migrate';
import { periodOf } from '@meterd/core/plans';
import { createRedis, scanEveryPrimary, type Redis } from '@meterd/core/store';
import {
  CH_MIGRATIONS_DIR,
  openTestStores,
  startPgBouncer,
  type TestPgBouncer,
  type TestStores,
} from '@meterd/core/testing';
import { ROOT, freePort, sleep, startOn, startService, waitFor, type Service } from '../support/services.js';
import { apiClient } from '../support/api.js';
import { RoundRobin } from '../support/round-robin.js';
import { lockClusterStacks } from '../support/cluster-lock.js';

/**
 * Issue #17 end to end: every store clustered at once and several replicas of every service.
 * Redis Cluster (3 primaries, infra/stack/redis-cluster.sh), ClickHouse 2 shards × 2 replicas with
 * ZooKeeper (infra/stack/ch-cluster.sh, quorum inserts), Postgres through PgBouncer in transaction
 * mode (DATABASE_URL; DATABASE_SESSION_URL direct); stripe-local; one control API; two ingest
 * processes behind a round-robin balancer behind the front router; two aggregators; two billing-sync
 * replicas. Workspaces sign up through the front, get a key and a Stripe customer, and send singles
 * and batches (duplicates inside a batch, whole batches replayed, every failed request retried until
 * acknowledged). Under that load: kill -9 of an ingest (restarted on its kept spool directory),
 * kill -9 of a ClickHouse replica (then restarted), kill -9 of an aggregator (the other takes its
 * shards). Then: every acknowledged event stored exactly once, hourly rollups exact, both reconciles
 * clean, Stripe's meter totals exact for billed workspaces, quota counters equal to stored events;
 * and a deleted workspace's purge reaches every ClickHouse node's local tables and every Redis primary.
 * docs/operations.md, "All three together".
 */
const REDIS_SCRIPT = join(ROOT, 'infra/stack/redis-cluster.sh');
const CH_SCRIPT = join(ROOT, 'infra/stack/ch-cluster.sh');
const CLUSTER = 'meterd';
const CH_URL = 'http://127.0.0.1:9201'; // n1; the test kills n4 (shard 02's second replica)
const PGBOUNCER_PORT = 6438;
const STRIPE_KEY = 'sk_test_fullstack';
const METERS = ['checkout.completed.usd', 'checkout.completed.eur', 'api.call'];
const SHARDS = '4';

interface Ev {
  workspace_id: string;
  event_type: 'api.call' | 'checkout.completed';
  idempotency_key: string;
  quantity: number;
  gmv_cents: number;
  currency: string;
  occurred_at: string;
}

let stores: TestStores;
let bouncer: TestPgBouncer;
let redis: Redis;
let ch: ClickHouseClient;
let chDb = '';
let startedRedis = false;
const spools: string[] = [];
const services: Service[] = [];
let balancer: RoundRobin | undefined;

function script(path: string, cmd: string, env: Record<string, string> = {}): string {
  return execFileSync('bash', [path, cmd], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 180_000 });
}

let unlock: (() => Promise<void>) | undefined;

before(async () => {
  unlock = await lockClusterStacks();
  startedRedis = script(REDIS_SCRIPT, 'up').startsWith('started');
  script(CH_SCRIPT, 'up');
  stores = await openTestStores('fullstack');
  bouncer = await startPgBouncer(PGBOUNCER_PORT);
  chDb = `meterd_fs_${randomBytes(4).toString('hex')}`;
  const connect = (database?: string): ClickHouseClient =>
    createClickHouse({
      url: new URL(CH_URL),
      database: database ?? 'default',
      user: 'default',
      password: '',
      requestTimeoutMs: 120_000,
      settings: clusterSettings({ CLICKHOUSE_CLUSTER: CLUSTER, CLICKHOUSE_INSERT_QUORUM: 2 }),
    });
  await migrateClickHouse(connect, chDb, CH_MIGRATIONS_DIR, { cluster: CLUSTER });
  ch = connect(chDb);
  const seeds = script(REDIS_SCRIPT, 'up').trim().split(' ')[1]!;
  redis = createRedis(loadConfig(storeVars, { ...process.env, REDIS_CLUSTER_NODES: seeds }));
});

after(async () => {
  try {
    await Promise.all(
      services.map(async (s) => {
        if (s.proc.exitCode !== null || s.proc.signalCode !== null) return;
        const exited = new Promise((r) => s.proc.once('exit', r));
        s.proc.kill('SIGKILL');
        await exited;
      }),
    );
    await balancer?.close();
    if (ch !== undefined) {
      await ch.command({ query: `DROP DATABASE IF EXISTS ${chDb} ON CLUSTER ${CLUSTER}` });
      await ch.close();
    }
    if (redis !== undefined) {
      // One UNLINK per key: a page holds keys of several slots.
      await scanEveryPrimary(redis, `${stores.redisPrefix}:*`, 1000, async (keys, node) => {
        await Promise.all(keys.map((k) => node.unlink(k)));
      });
      await redis.quit();
    }
    for (const d of spools) rmSync(d, { recursive: true, force: true });
    await bouncer?.stop();
    await stores?.close();
  } finally {
    // A failure while n4 was down must not leave it down for the next file.
    try {
      // Left running for the next file (clickhouse-cluster.test.ts says why); up brings back a node left killed.
      script(CH_SCRIPT, 'up');
      if (startedRedis) script(REDIS_SCRIPT, 'down');
    } finally {
      await unlock?.();
    }
  }
});

const hourFloor = (s: number): number => Math.floor(s / 3600) * 3600;
const meterOf = (e: Pick<Ev, 'event_type' | 'currency'>): string =>
  e.event_type === 'api.call' ? e.event_type : `${e.event_type}.${e.currency.toLowerCase()}`;
const valueOf = (e: Ev): number => (e.event_type === 'api.call' ? e.quantity : e.gmv_cents);
const triple = (e: Ev): string => `${e.workspace_id}|${e.event_type}|${e.idempotency_key}`;

async function rows<T>(query: string): Promise<T[]> {
  return (await ch.query({ query, format: 'JSONEachRow' })).json<T>();
}

/** Per `workspace|meter|hour`, from the events (or from ClickHouse's hourly rollups, FINAL). */
function expectedHourly(events: Iterable<Ev>): Map<string, number> {
  const out = new Map<string, number>();
  for (const e of events) {
    const k = `${e.workspace_id}|${meterOf(e)}|${hourFloor(Date.parse(e.occurred_at) / 1000)}`;
    out.set(k, (out.get(k) ?? 0) + valueOf(e));
  }
  return out;
}

async function rollupHourly(ids: string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const rs = await rows<{ workspace_id: string; event_type: Ev['event_type']; cur: string; w: string; v: string }>(
    `SELECT workspace_id, event_type, currency AS cur, toString(toUInt32(window_start)) AS w,
       toString(if(event_type = 'api.call', sum(quantity), sum(gmv_cents))) AS v
     FROM usage_hourly FINAL WHERE workspace_id IN (${ids.map(lit).join(', ')})
     GROUP BY workspace_id, event_type, cur, w`,
  );
  for (const r of rs) {
    const k = `${r.workspace_id}|${meterOf({ event_type: r.event_type, currency: r.cur })}|${r.w}`;
    out.set(k, (out.get(k) ?? 0) + Number(r.v));
  }
  return out;
}

/** `workspace|meter` totals of a per-hour map. */
function perMeter(hourly: Map<string, number>): Map<string, number> {
  const out = new Map<string, number>();
  for (const [k, v] of hourly) {
    const wm = k.slice(0, k.lastIndexOf('|'));
    out.set(wm, (out.get(wm) ?? 0) + v);
  }
  return new Map([...out].sort());
}

test('the whole stack clustered: kills under load lose nothing, double nothing; rollups, Stripe and quotas exact; purge reaches every node', async () => {
  const t0 = Date.now();
  const env: Record<string, string> = {
    ...stores.env,
    ...bouncer.envFor(stores.databaseUrl),
    REDIS_CLUSTER_NODES: script(REDIS_SCRIPT, 'up').trim().split(' ')[1]!,
    CLICKHOUSE_URL: CH_URL,
    CLICKHOUSE_DATABASE: chDb,
    CLICKHOUSE_CLUSTER: CLUSTER,
    AGGREGATOR_SHARDS: SHARDS,
    LOG_LEVEL: 'warn',
  };
  const stripeLocal = await startOn('stripe-local', {});
  services.push(stripeLocal);
  const control = await startOn('control-api', env, { SIGNUP_BURST: '100', WORKSPACE_PURGE_INTERVAL_MS: '500' });
  services.push(control);

  // Two ingest processes, each with its own spool directory, kept across a kill -9.
  const ingestPorts = [await freePort(), await freePort()];
  const ingestEnv = (i: number): Record<string, string> => {
    spools[i] ??= mkdtempSync(join(tmpdir(), `meterd-fullstack-spool${i}-`));
    return {
      ...env,
      INGEST_PORT: String(ingestPorts[i]),
      INGEST_THREADS: '1',
      SPOOL_DIR: spools[i]!,
      SHIP_INTERVAL_MS: '100',
    };
  };
  const ingest = [
    await startService('ingest-0', 'ingest', ingestPorts[0]!, ingestEnv(0)),
    await startService('ingest-1', 'ingest', ingestPorts[1]!, ingestEnv(1)),
  ];
  services.push(...ingest);
  const aggregatorEnv = {
    AGGREGATOR_POLL_MS: '200',
    AGGREGATOR_CLOSE_AFTER_SECONDS: '60',
    // A killed replica's shards go to the other after this.
    AGGREGATOR_LEASE_TTL_MS: '3000',
  };
  const aggregators = [
    await startOn('aggregator', env, aggregatorEnv),
    await startOn('aggregator', env, aggregatorEnv),
  ];
  services.push(...aggregators);
  balancer = await RoundRobin.start(ingestPorts);
  const frontPort = await freePort();
  const front = await startService(
    'front',
    'control-api',
    frontPort,
    {
      FRONT_PORT: String(frontPort),
      INGEST_URL: balancer.url,
      AGGREGATOR_URL: aggregators[1]!.url,
      CONTROL_API_URL: control.url,
      LOG_LEVEL: 'warn',
    },
    20_000,
    'front',
  );
  services.push(front);
  const billingEnv = {
    STRIPE_SECRET_KEY: STRIPE_KEY,
    STRIPE_API_BASE: stripeLocal.url,
    BILLING_CLOSE_DELAY_SECONDS: '60',
    BILLING_INTERVAL_MS: '300',
    BILLING_ENSURE_METERS: 'true',
    BILLING_METER_VALUES: 'api.call=quantity',
  };
  services.push(await startOn('billing-sync', env, billingEnv), await startOn('billing-sync', env, billingEnv));
  const call = apiClient(control.url);
  const stripe = new Stripe(STRIPE_KEY, {
    host: '127.0.0.1',
    port: Number(new URL(stripeLocal.url).port),
    protocol: 'http',
    maxNetworkRetries: 0,
  });

  // Sign-up through the front, then billing set-up as the billing e2e tests do: a Stripe customer and
  // a paid plan. The last workspace is not billed (no customer): only its rollups and quota count.
  const workspaces: { id: string; token: string; customer: string | null }[] = [];
  for (let i = 0; i < 4; i++) {
    const slug = `fullstack-${i}-${randomBytes(3).toString('hex')}`;
    const r = await call(front.url, 'POST', '/api/v1/signup', {
      body: { slug, display_name: slug, contact_email: `${slug}@example.com` },
    });
    assert.equal(r.status, 201, r.text);
    const id: string = r.json.workspace.id;
    let customer: string | null = null;
    if (i < 3) {
      customer = (await stripe.customers.create({ email: `${slug}@example.com`, metadata: { workspace_id: id } })).id;
    }
    await stores.pool.query(`UPDATE workspaces SET plan = 'enterprise', stripe_customer_id = $2 WHERE id = $1`, [
      id,
      customer,
    ]);
    workspaces.push({ id, token: r.json.api_key.token, customer });
  }

  // Two closed hours (2 h and 1 h ago): billing pushes them while the load still adds to them, so
  // the totals Stripe ends with are pushes plus corrections.
  const h0 = hourFloor(Date.now() / 1000) - 2 * 3600;
  const acked = new Map<string, Ev>();
  let requests = 0;
  let retries = 0;
  /** Sends until a 202 (the front answers 502 while an ingest is down; a reset connection is retried too). */
  const deliver = async (token: string, path: string, body: unknown, events: Ev[]): Promise<void> => {
    const deadline = Date.now() + 90_000;
    for (;;) {
      requests++;
      const res = await fetch(`${front.url}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(15_000),
      }).catch(() => null);
      const json = res === null ? null : ((await res.json().catch(() => null)) as Record<string, unknown> | null);
      // A batch's 202 may carry per-event 503s (nothing recorded for those): the batch is sent again,
      // its recorded events then answer as duplicates. Any other refusal is a failure.
      // So may a 409 idempotency_key_in_use: the event's claim belongs to a request still being
      // stored, or to one that died with a killed ingest, until that claim is settled.
      const results = (json?.results ?? []) as { status: number }[];
      if (res?.status === 202 && results.every((r) => r.status < 409)) {
        assert.equal(json!.rejected, path.endsWith('/batch') ? 0 : undefined, JSON.stringify(json));
        for (const e of events) if (!acked.has(triple(e))) acked.set(triple(e), e);
        return;
      }
      const inUse = (json?.error as { code?: string } | undefined)?.code === 'idempotency_key_in_use';
      assert.ok(
        res === null || res.status >= 500 || inUse || results.every((r) => r.status >= 500 || r.status === 409),
        `${res?.status}: ${JSON.stringify(json)}`,
      );
      assert.ok(Date.now() < deadline, `no 202 within 90 s for ${path}: ${res?.status} ${JSON.stringify(json)}`);
      retries++;
      await sleep(100);
    }
  };
  let stopping = false;
  const worker = async (w: (typeof workspaces)[number], wi: number): Promise<void> => {
    let previous: { body: unknown; events: Ev[] } | null = null;
    for (let seq = 0; !stopping; seq++) {
      const make = (j: number): Ev => {
        const n = seq * 100 + j;
        return {
          workspace_id: w.id,
          event_type: n % 3 === 0 ? 'api.call' : 'checkout.completed',
          idempotency_key: `w${wi}-${n}`,
          quantity: 1 + (n % 4),
          gmv_cents: 100 + (n % 997),
          currency: n % 5 === 0 ? 'EUR' : 'USD',
          occurred_at: new Date((h0 + ((n * 37) % 7200)) * 1000).toISOString(),
        };
      };
      if (seq % 6 === 5) {
        const e = make(0);
        await deliver(w.token, '/api/v1/meter', e, [e]);
        // A handler that never saw the answer sends the same event again.
        await deliver(w.token, '/api/v1/meter', e, [e]);
      } else if (seq % 5 === 4 && previous !== null) {
        await deliver(w.token, '/api/v1/meter/batch', previous.body, previous.events); // a whole batch replayed
      } else {
        const events = Array.from({ length: 20 }, (_, j) => make(j));
        const body = { events: [...events, events[7]!] }; // one event twice in its batch
        await deliver(w.token, '/api/v1/meter/batch', body, events);
        previous = { body, events };
      }
      await sleep(10);
    }
  };
  // A worker's failure stops the others and the fault sequence at once.
  const failed: { error?: Error } = {};
  const load = Promise.all(workspaces.map((w, i) => worker(w, i))).catch((err: Error) => {
    failed.error = err;
    stopping = true;
  });
  const grown = async (what: string, by: number): Promise<void> => {
    const from = acked.size;
    await waitFor(
      what,
      async () => {
        if (failed.error !== undefined) throw failed.error;
        return acked.size >= from + by;
      },
      60_000,
    );
  };
  try {
    await grown('load to start', 400);
    // kill -9 of an ingest; its replacement starts on the same spool directory and port.
    ingest[0]!.proc.kill('SIGKILL');
    await grown('acknowledgements from the other ingest', 200);
    ingest[0] = await startService('ingest-0', 'ingest', ingestPorts[0]!, ingestEnv(0));
    services.push(ingest[0]);
    // kill -9 of a ClickHouse replica: shard 02's quorum inserts fail, its rows wait in the spools.
    script(CH_SCRIPT, 'kill9', { CH_CLUSTER_NODE: 'n4' });
    await grown('acknowledgements with a replica down', 300);
    script(CH_SCRIPT, 'start-node', { CH_CLUSTER_NODE: 'n4' });
    // kill -9 of an aggregator: the other takes its shards when the leases run out.
    aggregators[0]!.proc.kill('SIGKILL');
    await grown('acknowledgements with one aggregator', 200);
  } finally {
    stopping = true;
    await load;
  }
  if (failed.error !== undefined) throw failed.error;
  const loadMs = Date.now() - t0;
  const ids = workspaces.map((w) => w.id);
  const inIds = ids.map(lit).join(', ');
  const outputs = (): string => services.map((s) => `${s.name}:\n${s.output()}`).join('\n');

  // Every acknowledged event stored exactly once.
  const distinct = async (): Promise<number> =>
    Number(
      (
        await rows<{ n: string }>(
          `SELECT toString(count()) AS n FROM (SELECT DISTINCT workspace_id, event_type, idempotency_key FROM events WHERE workspace_id IN (${inIds}))`,
        )
      )[0]!.n,
    );
  await waitFor('every acknowledged event in ClickHouse', async () => (await distinct()) === acked.size, 120_000).catch(
    async (err: Error) => assert.fail(`${err.message}: ${await distinct()} of ${acked.size}\n${outputs()}`),
  );
  const [final] = await rows<{ n: string }>(
    `SELECT toString(count()) AS n FROM events FINAL WHERE workspace_id IN (${inIds})`,
  );
  assert.equal(Number(final!.n), acked.size, 'FINAL keeps one row per acknowledged event');
  const storedMs = Date.now() - t0;

  // Hourly rollups exact.
  const want = new Map([...expectedHourly(acked.values())].sort());
  const got = async (): Promise<Map<string, number>> => new Map([...(await rollupHourly(ids))].sort());
  await waitFor(
    'hourly rollups equal to the acknowledged events',
    async () => {
      const g = await got();
      return g.size === want.size && [...want].every(([k, v]) => g.get(k) === v);
    },
    90_000,
  ).catch(async () => assert.deepEqual(await got(), want, outputs()));

  // Days and months are rolled up from the hours after them, in the same aggregator cycle: wait for
  // those too (event counts per workspace) before the reconcile compares every granularity.
  const perWorkspace = JSON.stringify(
    ids.map((id) => [id, String([...acked.values()].filter((e) => e.workspace_id === id).length)]).sort(),
  );
  for (const table of ['usage_daily', 'usage_monthly']) {
    const counts = async (): Promise<string> =>
      JSON.stringify(
        (
          await rows<{ w: string; n: string }>(
            `SELECT workspace_id AS w, toString(sum(events)) AS n FROM ${table} FINAL WHERE workspace_id IN (${inIds}) GROUP BY w`,
          )
        )
          .map((r) => [r.w, r.n])
          .sort(),
      );
    await waitFor(`${table} to count every event`, async () => (await counts()) === perWorkspace, 60_000).catch(
      async () => assert.equal(await counts(), perWorkspace, `${table}\n${outputs()}`),
    );
  }

  // Quota counters (this month's) equal the stored events exactly: ingest counts an event when it
  // commits its key after the spool write, so claims of requests a killed ingest never answered,
  // or answered 503, never count, even once their retries are stored (docs/redis.md).
  const period = periodOf(Date.now());
  for (const w of workspaces) {
    const stored = [...acked.values()].filter((e) => e.workspace_id === w.id).length;
    const counted = Number(await redis.get(quotaKey(stores.redisPrefix, w.id, period)));
    if (counted !== stored) assert.equal(counted, stored, `quota of ${w.id}\n${outputs()}`);
  }

  // The aggregator's reconcile (every granularity recomputed from the raw events) is clean.
  const rec = spawnSync('node', [join(ROOT, 'aggregator/dist/src/reconcile.js'), '--all'], {
    env: { ...process.env, ...env, AGGREGATOR_CLOSE_AFTER_SECONDS: '60' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(rec.status, 0, `${rec.stdout}${rec.stderr}`);

  // Billing: the ledger's sent values (pushes plus corrections) reach the totals, then Stripe agrees.
  const billed = workspaces.filter((w) => w.customer !== null);
  const wantBilled = new Map([...perMeter(want)].filter(([k]) => billed.some((w) => k.startsWith(`${w.id}|`))));
  const ledger = async (): Promise<Map<string, number>> => {
    const { rows: r } = await stores.pool.query<{ k: string; v: string; pending: number }>(
      `SELECT workspace_id || '|' || event_name AS k, sum(value) FILTER (WHERE status = 'sent')::text AS v,
         count(*) FILTER (WHERE status = 'pending')::int AS pending
       FROM billing_pushes GROUP BY 1`,
    );
    if (r.some((x) => x.pending > 0)) return new Map();
    return new Map(r.map((x) => [x.k, Number(x.v)] as [string, number]).sort());
  };
  await waitFor(
    'the ledger to have pushed every billed total',
    async () => {
      const l = await ledger();
      return l.size === wantBilled.size && [...wantBilled].every(([k, v]) => l.get(k) === v);
    },
    90_000,
  ).catch(async () => assert.deepEqual(await ledger(), wantBilled, outputs()));
  const meters = new Map<string, string>();
  for await (const m of stripe.billing.meters.list({ limit: 100 })) meters.set(m.event_name, m.id);
  const atStripe = new Map<string, number>();
  for (const w of billed) {
    for (const name of METERS) {
      const id = meters.get(name);
      if (id === undefined) continue;
      await sleep(45); // under stripe-local's 25/s test-mode limit
      const s = await stripe.billing.meters.listEventSummaries(id, {
        customer: w.customer!,
        start_time: h0,
        end_time: h0 + 7200,
      });
      const v = s.data.reduce((a, x) => a + x.aggregated_value, 0);
      if (v !== 0) atStripe.set(`${w.id}|${name}`, v);
    }
  }
  assert.deepEqual(new Map([...atStripe].sort()), wantBilled, "Stripe's meter totals equal the rollups");
  const billingRec = spawnSync(
    'node',
    [
      join(ROOT, 'billing-sync/dist/src/reconcile-cli.js'),
      '--from',
      new Date(h0 * 1000).toISOString(),
      '--to',
      new Date((h0 + 7200) * 1000).toISOString(),
    ],
    { env: { ...process.env, ...env, ...billingEnv }, encoding: 'utf8', timeout: 60_000 },
  );
  assert.equal(billingRec.status, 0, `${billingRec.stdout}${billingRec.stderr}`);
  assert.match(`${billingRec.stdout}${billingRec.stderr}`, /: 0 difference/);
  const billedMs = Date.now() - t0;

  // Purge on the cluster: the unbilled workspace is deleted and its grace period moved into the past;
  // the control API's purge loop removes its rows from both shards' local tables and its Redis keys
  // from whichever primary holds its slot.
  const gone = workspaces[3]!;
  assert.ok(Number(await redis.get(quotaKey(stores.redisPrefix, gone.id, period))) > 0);
  assert.equal((await call(front.url, 'DELETE', `/api/v1/workspaces/${gone.id}`, { token: gone.token })).status, 200);
  await stores.pool.query(`UPDATE workspaces SET purge_after = now() - interval '1 second' WHERE id = $1`, [gone.id]);
  await waitFor(
    'the purge to finish',
    async () => {
      const { rows: r } = await stores.pool.query('SELECT purged_at FROM workspaces WHERE id = $1', [gone.id]);
      return r[0].purged_at !== null;
    },
    30_000,
  ).catch(() => assert.fail(`not purged:\n${control.output()}`));
  // Every node holds the DELETE mutation of every workspace table's local table. ClickHouse 18.16
  // then mutates every part except a partition's last quorum insert (quorum/last_part), which it
  // leaves until the next insert into that partition: with traffic the rows go, in an idle
  // partition they wait (docs/operations.md, "Mutations"). So: at most one part per partition (the
  // load's hours span two months in the first hours of a month) of each node's table.
  const tables = ['events', 'usage_hourly', 'usage_daily', 'usage_monthly', 'event_batches', 'event_windows'];
  for (const port of [9201, 9211, 9221, 9231]) {
    const node = createClickHouse({
      url: new URL(`http://127.0.0.1:${port}`),
      database: chDb,
      user: 'default',
      password: '',
    });
    try {
      const mutations = async (): Promise<{ table: string; parts_to_do: string }[]> =>
        (
          await node.query({
            query: `SELECT table, toString(parts_to_do) AS parts_to_do FROM system.mutations
              WHERE database = ${lit(chDb)} AND position(command, ${lit(gone.id)}) > 0 ORDER BY table`,
            format: 'JSONEachRow',
          })
        ).json();
      const partitions = async (): Promise<Map<string, number>> =>
        new Map(
          (
            await (
              await node.query({
                query: `SELECT table, toString(uniqExact(partition)) AS n FROM system.parts
                  WHERE database = ${lit(chDb)} AND active GROUP BY table`,
                format: 'JSONEachRow',
              })
            ).json<{ table: string; n: string }>()
          ).map((r) => [r.table, Number(r.n)]),
        );
      await waitFor(
        `node ${port} to mutate the purged workspace's parts`,
        async () => {
          const [m, p] = [await mutations(), await partitions()];
          return m.length === tables.length && m.every((x) => Number(x.parts_to_do) <= (p.get(x.table) ?? 0));
        },
        30_000,
      ).catch(async () =>
        assert.fail(`node ${port}: ${JSON.stringify(await mutations())} ${JSON.stringify([...(await partitions())])}`),
      );
      assert.deepEqual(
        (await mutations()).map((x) => x.table),
        tables.map((t) => `${t}_local`).sort(),
      );
    } finally {
      await node.close();
    }
  }
  await scanEveryPrimary(redis, `${stores.redisPrefix}:{${gone.id}}:*`, 1000, async (keys) => {
    assert.deepEqual(keys, [], 'no key of the purged workspace on any primary');
  });

  console.log(
    `# full-stack: ${acked.size} events acknowledged over ${requests} requests (${retries} retried) from ${workspaces.length} workspaces; ` +
      `load with kills ${loadMs} ms; all stored at ${storedMs} ms; Stripe exact at ${billedMs} ms; whole test ${Date.now() - t0} ms`,
  );
});
