import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { freePort } from '@meterd/core/net';
import { startService, type Service, type ServiceSpec } from '@meterd/core/service';
import { openTestStores, REPO_ROOT, type TestStores } from '@meterd/core/testing';
import { alertRules, dashboardQueries } from '../src/observability.js';
import { metricNames } from '../src/promql.js';

/**
 * The alerts and the Grafana dashboard read only metrics meterd exports: every service is started as
 * its entry point starts it, its /metrics scraped, and each name an expression reads must be among
 * what the scrapes declared (# TYPE lines; a histogram also answers as _bucket, _sum and _count).
 */
let stores: TestStores;
let dir: string;
const exported = new Set<string>();

type AnySpec = ServiceSpec<{ readonly LOG_LEVEL: string }, Service>;
const SERVICES: [pkg: string, file: string, name: string, portVar: string, env: Record<string, string>][] = [
  ['ingest', 'service.js', 'ingestService', 'INGEST_PORT', { INGEST_THREADS: '1' }],
  ['aggregator', 'app.js', 'aggregatorService', 'AGGREGATOR_PORT', {}],
  ['billing-sync', 'service.js', 'billingSyncService', 'BILLING_SYNC_PORT', { STRIPE_SECRET_KEY: '' }],
  ['control-api', 'server.js', 'controlService', 'CONTROL_API_PORT', { NODE_ENV: 'development' }],
];

before(async () => {
  stores = await openTestStores('observability');
  dir = mkdtempSync(join(tmpdir(), 'meterd-observability-'));
  for (const [pkg, file, name, portVar, extra] of SERVICES) {
    const mod = (await import(pathToFileURL(join(REPO_ROOT, pkg, 'dist/src', file)).href)) as Record<string, AnySpec>;
    const port = await freePort();
    const env = {
      ...process.env,
      ...stores.env,
      LOG_LEVEL: 'silent',
      SPOOL_DIR: join(dir, 'spool'),
      [portVar]: String(port),
      ...extra,
    };
    const started = await startService(mod[name]!, env);
    try {
      const text = await scrape(`http://127.0.0.1:${port}/metrics`);
      for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
        exported.add(m[1]!);
        if (m[2] === 'histogram') for (const s of ['_bucket', '_sum', '_count']) exported.add(m[1]! + s);
      }
    } finally {
      await started.drain();
    }
  }
});
/** /metrics once the service listens (ingest's threads start listening after start() returned). */
async function scrape(url: string): Promise<string> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const r = await fetch(url).catch((err: unknown) => err as Error);
    if (!(r instanceof Error)) return r.text();
    if (Date.now() > deadline) throw r;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

after(async () => {
  await stores.close();
  rmSync(dir, { recursive: true, force: true });
});

test('every alert expression reads only metrics meterd exports', () => {
  const rules = alertRules();
  assert.ok(rules.length >= 10);
  for (const r of rules) {
    const names = metricNames(r.expr);
    assert.ok(names.length > 0, `${r.alert}: no metric in ${r.expr}`);
    for (const n of names) assert.ok(exported.has(n), `${r.alert} reads ${n}, which no meterd service exports`);
  }
});

test('the alerts cover spool, shipping, rollup watermark, billing, webhooks, Redis memory and quota counter rebuilds', () => {
  const read = new Set(alertRules().flatMap((r) => metricNames(r.expr)));
  for (const n of [
    'meterd_ingest_spool_unshipped_bytes',
    'meterd_ingest_shipped_rows_total',
    'aggregator_watermark_age_seconds',
    'billing_pending_rows',
    'billing_unbillable_total',
    'meterd_control_webhook_endpoints_disabled',
    'meterd_redis_used_memory_bytes',
    'meterd_redis_maxmemory_bytes',
    'meterd_ingest_quota_rebuilds_total',
  ])
    assert.ok(read.has(n), `no alert reads ${n}`);
});

test('every Grafana panel query reads only metrics meterd exports', () => {
  const queries = dashboardQueries();
  assert.ok(queries.length >= 10);
  for (const q of queries)
    for (const n of metricNames(q.expr))
      assert.ok(exported.has(n), `panel "${q.panel}" reads ${n}, which no meterd service exports`);
});

test('metric names are read out of PromQL, not label names, functions or durations', () => {
  assert.deepEqual(
    metricNames('histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{x="y"}[5m]))) > 1e3 and on (pod) b'),
    ['a_seconds_bucket', 'b'],
  );
});
