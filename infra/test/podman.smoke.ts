import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { clickHouseFromConfig } from '@meterd/core/clickhouse';
import { loadConfig, storeVars } from '@meterd/core/config';
import { freePort } from '@meterd/core/net';
import { createPool, createRedis } from '@meterd/core/store';
import { REPO_ROOT } from '@meterd/core/testing';
import { kustomize, type Manifest } from '../src/kustomize.js';

/**
 * The image and the manifests, run: infra/k8s/overlays/local through `podman kube play --network=host`
 * against the host's stores (a database, ClickHouse database and Redis prefix of its own). First the
 * setup (ConfigMap and the migration Job, as a Pod), then every service; each answers /healthz and
 * /readyz; then the seed's three curls through the front router (the ingress's path rules) and the
 * event in ClickHouse and in the usage API. Opt-in (`npm run image:smoke`, which builds the image):
 * it needs root podman and minutes, so `npm test` does not run it. METERD_IMAGE_TAG names the image.
 */
const IMAGE = process.env.METERD_IMAGE_TAG ?? '';
const id = `smoke${Date.now().toString(36)}`;
const base = loadConfig(storeVars);
const dbName = `meterd_${id}`;
const dir = mkdtempSync(join(tmpdir(), 'meterd-kube-'));
const ports: Record<string, number> = {};
const volumes: string[] = [];
const pods: string[] = [];
type Obj = Record<string, any>;

const podman = (...args: string[]) =>
  execFileSync('podman', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 180_000 });

/** What podman cannot run as Kubernetes would, turned into what it can (see overlays/local). */
function forPodman(objects: Manifest[]): Obj[] {
  const out: Obj[] = [];
  const secrets = new Map<string, Record<string, string>>(
    (objects as Obj[]).filter((m) => m.kind === 'Secret').map((m) => [m.metadata.name, m.stringData]),
  );
  for (const m of objects as Obj[]) {
    if (m.kind === 'Secret') continue;
    for (const c of [...(m.spec?.template?.spec?.containers ?? []), ...(m.spec?.containers ?? [])]) {
      inlineSecrets(c, secrets);
      hostNetworkPorts(c);
    }
    if (['Service', 'Ingress', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'NetworkPolicy'].includes(m.kind))
      continue;
    if (m.kind === 'Job') {
      out.push({ apiVersion: 'v1', kind: 'Pod', metadata: { name: m.metadata.name }, spec: m.spec.template.spec });
    } else if (m.kind === 'StatefulSet') {
      const claim = `${m.metadata.name}-spool-${id}`;
      volumes.push(claim);
      out.push({
        apiVersion: 'v1',
        kind: 'PersistentVolumeClaim',
        metadata: { name: claim },
        spec: m.spec.volumeClaimTemplates[0].spec,
      });
      const spec = { ...m.spec.template.spec, volumes: [...m.spec.template.spec.volumes] };
      spec.volumes.push({ name: 'spool', persistentVolumeClaim: { claimName: claim } });
      out.push({
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        metadata: { name: m.metadata.name },
        spec: { replicas: 1, selector: m.spec.selector, template: { ...m.spec.template, spec } },
      });
    } else out.push(m);
  }
  return out;
}

/**
 * podman 4.3's kube play neither takes a Secret from the played file nor reads the podman secrets it
 * creates from one ("not valid JSON"): the local overlay's development values go inline instead.
 */
function inlineSecrets(c: Obj, secrets: Map<string, Record<string, string>>): void {
  const env: Obj[] = [];
  for (const from of c.envFrom ?? []) {
    if (from.secretRef === undefined) continue;
    for (const [name, value] of Object.entries(secrets.get(from.secretRef.name) ?? {})) env.push({ name, value });
  }
  c.envFrom = (c.envFrom ?? []).filter((f: Obj) => f.secretRef === undefined);
  for (const e of c.env ?? []) {
    const ref = e.valueFrom?.secretKeyRef;
    if (ref === undefined) env.push(e);
    else if (secrets.get(ref.name)?.[ref.key] !== undefined)
      env.push({ name: e.name, value: secrets.get(ref.name)![ref.key] });
    else assert.ok(ref.optional, `${c.name}: ${e.name} needs ${ref.name}/${ref.key}`);
  }
  c.env = env;
}

/** On the host's network podman refuses port mappings: probes name the port by number instead. */
function hostNetworkPorts(c: Obj): void {
  const byName = new Map<string, number>((c.ports ?? []).map((p: Obj) => [p.name, p.containerPort]));
  for (const probe of [c.livenessProbe, c.readinessProbe, c.startupProbe])
    if (probe?.httpGet !== undefined) probe.httpGet.port = byName.get(probe.httpGet.port) ?? probe.httpGet.port;
  delete c.ports;
}

function play(name: string, objects: Obj[]): void {
  for (const o of objects)
    if (o.kind === 'Pod') pods.push(o.metadata.name);
    else if (o.kind === 'Deployment') pods.push(`${o.metadata.name}-pod-0`);
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, objects.map((o) => stringify(o)).join('---\n'));
  podman('kube', 'play', '--network=host', file);
}

async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    const v = await probe().catch((err: unknown) => void (last = err));
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last error: ${String(last)})`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

before(async () => {
  assert.ok(IMAGE !== '', 'METERD_IMAGE_TAG must name the image (npm run image:smoke sets it)');
  const admin = createPool(base.DATABASE_URL, 1);
  await admin.query(`CREATE DATABASE ${dbName}`);
  await admin.end();
  for (const s of ['ingest', 'aggregator', 'billing', 'control', 'front', 'stripe', 'provision'])
    ports[s] = await freePort();
});

after(async () => {
  // kube down stops nothing of a file whose play failed half-way: remove the pods by name.
  if (pods.length > 0) podman('pod', 'rm', '--force', '--ignore', ...pods);
  // podman kube down leaves the claims' volumes.
  if (volumes.length > 0) podman('volume', 'rm', '-f', ...volumes);
  const admin = createPool(base.DATABASE_URL, 1);
  await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
  await admin.end();
  const ch = clickHouseFromConfig(base, { database: 'default' });
  await ch.command({ query: `DROP DATABASE IF EXISTS ${dbName}` });
  await ch.close();
  const redis = createRedis(base.REDIS_URL);
  const keys = await redis.keys(`${id}:*`);
  if (keys.length > 0) await redis.del(...keys);
  await redis.quit();
  rmSync(dir, { recursive: true, force: true });
});

test('podman kube play: migrate, every service ready, signup → provision → meter, event in ClickHouse and usage', async () => {
  const db = new URL(base.DATABASE_URL.toString());
  db.pathname = `/${dbName}`;
  // Ports of their own on the host's network, and this run's stores.
  const text = JSON.stringify(kustomize(join(REPO_ROOT, 'infra/k8s/overlays/local')))
    .replaceAll('localhost/meterd:REVISION', IMAGE)
    .replace(/\b8081\b/g, String(ports.ingest))
    .replace(/\b8083\b/g, String(ports.aggregator))
    .replace(/\b8084\b/g, String(ports.billing))
    .replace(/\b8082\b/g, String(ports.control))
    .replace(/\b8080\b/g, String(ports.front))
    .replace(/\b12111\b/g, String(ports.stripe))
    .replace('postgres://postgres@127.0.0.1:5432/meterd', db.toString())
    .replace('"redis://127.0.0.1:6379"', JSON.stringify(base.REDIS_URL.toString()))
    .replace('"http://127.0.0.1:8123"', JSON.stringify(base.CLICKHOUSE_URL.toString()));
  const objects = forPodman(JSON.parse(text) as Manifest[]);
  const config = objects.find((o) => o.kind === 'ConfigMap')!;
  Object.assign(config.data, { CLICKHOUSE_DATABASE: dbName, REDIS_KEY_PREFIX: id, LOG_LEVEL: 'warn' });
  const control = objects.find((o) => o.metadata.name === 'meterd-control-api')!;
  control.spec.template.spec.containers[0].env.push({
    name: 'PROVISION_LOCAL_PORT_BASE',
    value: String(ports.provision),
  });
  const setup = objects.filter((o) => o.kind === 'ConfigMap' || o.metadata.name === 'meterd-migrate');

  play('setup', setup);
  const exit = podman('wait', 'meterd-migrate-migrate').trim();
  const logs = podman('logs', 'meterd-migrate-migrate');
  assert.equal(exit, '0', `migrate exited ${exit}:\n${logs}`);
  assert.match(logs, /postgres: applied/);

  // A played file's ConfigMaps exist for that file only.
  play('services', [config, ...objects.filter((o) => !setup.includes(o))]);
  for (const [name, port] of Object.entries(ports)) {
    if (name === 'provision') continue;
    for (const path of ['/healthz', ...(name === 'stripe' ? [] : ['/readyz'])])
      await until(`${name} ${path}`, 90_000, async () =>
        (await fetch(`http://127.0.0.1:${port}${path}`)).status === 200 ? true : undefined,
      );
  }

  const front = `http://127.0.0.1:${ports.front}`;
  const call = async (method: string, path: string, body: unknown, token?: string) => {
    const r = await fetch(`${front}${path}`, {
      method,
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: r.status, headers: r.headers, json: (await r.json()) as Obj };
  };
  const signup = await call('POST', '/api/v1/signup', {
    slug: `acme-${id}`,
    display_name: 'Acme',
    contact_email: 'ops@acme.com',
  });
  assert.equal(signup.status, 201, JSON.stringify(signup.json));
  const SKS = signup.json.api_key.token as string;
  const WS = signup.json.workspace.id as string;
  assert.match(WS, /^ws_[A-Za-z0-9]+$/);
  const prov = await call(
    'POST',
    '/api/v1/provision',
    {
      service: 'acp-handler',
      customer_id: 'acme',
      config: { METER_URL: front, METER_WORKSPACE_ID: WS, METER_API_KEY: SKS },
    },
    SKS,
  );
  assert.equal(prov.status, 202, JSON.stringify(prov.json));
  const occurred = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
  const meter = await call(
    'POST',
    '/api/v1/meter',
    {
      workspace_id: WS,
      event_type: 'checkout.completed',
      quantity: 1,
      gmv_cents: 4299,
      idempotency_key: 'order_5521',
      occurred_at: occurred,
    },
    SKS,
  );
  assert.equal(meter.status, 202, JSON.stringify(meter.json));
  assert.equal(meter.headers.get('x-plan-events-used'), '1');

  const ch = clickHouseFromConfig(base, { database: dbName });
  try {
    const rows = await until('the event in ClickHouse', 60_000, async () => {
      const r = await ch.query({
        // ClickHouse 18.16 (the local stack's) has no query parameters; WS is checked to be ws_ + [a-z0-9].
        query: `SELECT idempotency_key, toString(gmv_cents) AS gmv FROM events WHERE workspace_id = '${WS}'`,
        format: 'JSONEachRow',
      });
      const list = await r.json<{ idempotency_key: string; gmv: string }>();
      return list.length > 0 ? list : undefined;
    });
    assert.deepEqual(rows, [{ idempotency_key: 'order_5521', gmv: '4299' }]);
  } finally {
    await ch.close();
  }
  const usage = await until('the event in the usage API', 60_000, async () => {
    const r = await call('GET', `/api/v1/workspaces/${WS}/usage`, undefined, SKS);
    return JSON.stringify(r.json).includes('4299') ? r.json : undefined;
  });
  console.log('usage API:', JSON.stringify(usage));
  console.log('pods:', podman('pod', 'ps', '--format', '{{.Name}} {{.Status}}').trim().replace(/\n/g, '; '));
  await call('DELETE', `/api/v1/provision/${prov.json.provision.id}`, undefined, SKS);
});
