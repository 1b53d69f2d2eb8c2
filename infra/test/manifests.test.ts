import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { REPO_ROOT } from '@meterd/core/testing';
import { kustomize, type Manifest } from '../src/kustomize.js';
import { validateManifest } from '../src/validate.js';

/**
 * infra/k8s rendered offline (infra/src/kustomize.ts) and validated against Kubernetes' schemas
 * (kubernetes-models), then checked for what a deployment of meterd needs.
 */
const K8S = join(REPO_ROOT, 'infra/k8s');
const TREES = ['setup', 'base', 'overlays/production/setup', 'overlays/production', 'overlays/local'];
const render = (tree: string) => kustomize(join(K8S, tree));
const production = () => [...render('overlays/production/setup'), ...render('overlays/production')];
type Obj = Record<string, any>;

for (const tree of TREES)
  test(`${tree}: every object validates against the Kubernetes schema`, async () => {
    const objects = render(tree);
    assert.ok(objects.length > 0);
    for (const m of objects) await validateManifest(m);
  });

test('an invalid object fails validation', async () => {
  const bad = { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'x' }, spec: { replicas: 'two' } };
  await assert.rejects(validateManifest(bad as unknown as Manifest), /Deployment\/x does not validate/);
});

test('the renderer agrees with kubectl kustomize (where kubectl is installed)', (t) => {
  let kubectl = true;
  try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
  } catch {
    kubectl = false;
  }
  if (!kubectl) return t.skip('kubectl is not installed: compared only where it is');
  const key = (m: Manifest) => `${m.kind}/${m.metadata.name}`;
  const sorted = (l: Manifest[]) => [...l].sort((a, b) => key(a).localeCompare(key(b)));
  for (const tree of TREES) {
    const out = execFileSync('kubectl', ['kustomize', join(K8S, tree)], { encoding: 'utf8' });
    const theirs = parseAllDocuments(out).map((d) => d.toJSON() as Manifest);
    assert.deepEqual(sorted(render(tree)), sorted(theirs), tree);
  }
});

const workloads = (l: Manifest[]) => l.filter((m) => ['Deployment', 'StatefulSet'].includes(m.kind)) as Obj[];
const byName = (l: Manifest[], kind: string, name: string) =>
  l.find((m) => m.kind === kind && m.metadata.name === name) as Obj | undefined;

test('ingest is a StatefulSet with a volume per pod and a preStop drain', () => {
  const ingest = byName(production(), 'StatefulSet', 'meterd-ingest')!;
  assert.equal(ingest.spec.volumeClaimTemplates[0].metadata.name, 'spool');
  const c = ingest.spec.template.spec.containers[0];
  assert.ok(c.volumeMounts.some((v: Obj) => v.name === 'spool' && v.mountPath === '/var/lib/meterd/spool'));
  assert.ok(c.env.some((e: Obj) => e.name === 'SPOOL_DIR' && e.value === '/var/lib/meterd/spool'));
  assert.deepEqual(c.lifecycle.preStop.exec.command, ['/usr/local/bin/node', '/app/infra/image/prestop-ingest.mjs']);
  // preStop (PRESTOP_MAX_MS) plus ingest's 20 s drain fit in the grace period.
  const preStopMs = Number(c.env.find((e: Obj) => e.name === 'PRESTOP_MAX_MS').value);
  assert.ok(ingest.spec.template.spec.terminationGracePeriodSeconds * 1000 >= preStopMs + 20_000);
});

test('every service has probes on /healthz and /readyz, resources, a PDB; HPAs for ingest and control-api', () => {
  const all = production();
  const names = workloads(all).map((w) => w.metadata.name as string);
  assert.deepEqual(names.sort(), ['meterd-aggregator', 'meterd-billing-sync', 'meterd-control-api', 'meterd-ingest']);
  for (const w of workloads(all)) {
    const c = w.spec.template.spec.containers[0];
    assert.equal(c.livenessProbe.httpGet.path, '/healthz', w.metadata.name);
    assert.equal(c.readinessProbe.httpGet.path, '/readyz', w.metadata.name);
    for (const k of ['requests', 'limits']) assert.ok(c.resources[k].cpu && c.resources[k].memory, w.metadata.name);
    assert.ok(w.spec.template.spec.securityContext.runAsNonRoot);
    assert.match(c.image, /^registry\.example\.com\/meterd:/);
    const pdb = byName(all, 'PodDisruptionBudget', w.metadata.name)!;
    assert.deepEqual(pdb.spec.selector.matchLabels, w.spec.selector.matchLabels);
  }
  const hpas = all.filter((m) => m.kind === 'HorizontalPodAutoscaler') as Obj[];
  assert.deepEqual(hpas.map((h) => `${h.spec.scaleTargetRef.kind}/${h.spec.scaleTargetRef.name}`).sort(), [
    'Deployment/meterd-control-api',
    'StatefulSet/meterd-ingest',
  ]);
  assert.ok(all.some((m) => m.kind === 'NetworkPolicy'));
  const job = byName(all, 'Job', 'meterd-migrate')!;
  assert.deepEqual(job.spec.template.spec.containers[0].args, ['migrate']);
});

test('the ingress sends meter paths to ingest, usage to the aggregator, the rest to control-api', () => {
  const ingress = byName(production(), 'Ingress', 'meterd')!;
  const route = Object.fromEntries(
    ingress.spec.rules[0].http.paths.map((p: Obj) => [p.path, p.backend.service.name as string]),
  );
  assert.deepEqual(route, {
    '/api/v1/meter': 'meterd-ingest',
    '/api/v1/meter/batch': 'meterd-ingest',
    '/api/v1/workspaces/[^/]+/usage': 'meterd-aggregator',
    '/': 'meterd-control-api',
  });
  assert.match('/api/v1/workspaces/ws_1/usage', new RegExp(`^${'/api/v1/workspaces/[^/]+/usage'}$`));
});

test('secrets are referenced, never written, and every variable is a setting meterd reads', () => {
  const all = production();
  assert.equal(all.filter((m) => m.kind === 'Secret').length, 0);
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const known = new Set([...readme.matchAll(/^\| `([A-Z0-9_]+)` \|/gm)].map((m) => m[1]!));
  for (const extra of ['PRESTOP_MAX_MS', 'PRESTOP_MIN_MS']) known.add(extra); // prestop-ingest.mjs
  const secret = /SECRET|PASSWORD|TOKEN|_KEY$|DATABASE_(SESSION_)?URL|REDIS_URL/;
  for (const m of all as Obj[]) {
    for (const k of Object.keys(m.data ?? {})) assert.ok(known.has(k), `ConfigMap key ${k} is no meterd setting`);
    for (const k of Object.keys(m.data ?? {})) assert.doesNotMatch(k, secret, `${k} belongs in a Secret`);
  }
  for (const w of [...workloads(all), byName(all, 'Job', 'meterd-migrate')!])
    for (const e of w.spec.template.spec.containers[0].env ?? []) {
      assert.ok(known.has(e.name), `${w.metadata.name}: ${e.name} is no meterd setting`);
      if (secret.test(e.name)) assert.ok(e.valueFrom?.secretKeyRef, `${w.metadata.name}: ${e.name} inline`);
    }
});

test('the compose trial runs meterd commands of the image with settings meterd reads', () => {
  const compose = parseAllDocuments(readFileSync(join(REPO_ROOT, 'infra/compose/compose.yaml'), 'utf8'), {
    merge: true,
  })[0]!.toJSON() as {
    services: Record<string, { image: string; command?: string[]; environment?: Record<string, string> }>;
  };
  const entry = readFileSync(join(REPO_ROOT, 'infra/image/entrypoint.mjs'), 'utf8');
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const known = new Set([...readme.matchAll(/^\| `([A-Z0-9_]+)` \|/gm)].map((m) => m[1]!));
  for (const v of ['FRONT_PORT', 'AGGREGATOR_URL', 'CONTROL_API_URL']) known.add(v); // the front router's
  const meterd = Object.entries(compose.services).filter(([, s]) => s.image.includes('METERD_IMAGE'));
  assert.deepEqual(meterd.map(([name]) => name).sort(), [
    'aggregator',
    'billing-sync',
    'control-api',
    'front',
    'ingest',
    'migrate',
    'stripe-local',
  ]);
  for (const [name, s] of meterd) {
    assert.ok(entry.includes(`'${s.command![0]}':`) || entry.includes(`  ${s.command![0]}:`), `${name}: command`);
    for (const k of Object.keys(s.environment ?? {})) assert.ok(known.has(k), `${name}: ${k} is no meterd setting`);
  }
});
