import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '@meterd/core/config';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { call, eventually, startTestControl, testEnv } from './helpers.js';
import { REPO } from './procs.js';
import { loadControlConfig } from '../src/config.js';
import { SecretBox } from '../src/crypto/secret-box.js';
import type { ControlServer } from '../src/server.js';

/**
 * Issue 12, item 1: a tenant's provisioning config became the environment of a process on the
 * host, so `NODE_OPTIONS=--import=data:…` ran the tenant's code there. Each test performs the
 * attack with a payload that leaves a marker file if it ever runs.
 */
let stores: TestStores;
let s: ControlServer;
let dir: string;

before(async () => {
  stores = await openTestStores('ctlsecprov');
  s = await startTestControl(stores, { PROVISION_LOCAL_ENABLED: 'true' });
  dir = mkdtempSync(join(tmpdir(), 'meterd-inject-'));
});
after(async () => {
  await s.close();
  await stores.close();
  rmSync(dir, { recursive: true, force: true });
});

const injection = (marker: string) =>
  `--import=data:text/javascript,import{writeFileSync}from'node:fs';writeFileSync('${marker}','pwned')`;
const legit = (ws: string, token: string) => ({
  METER_URL: 'http://127.0.0.1:9',
  METER_WORKSPACE_ID: ws,
  METER_API_KEY: token,
});

async function settled(id: string, token: string): Promise<{ status: string; url: string | null }> {
  return eventually(
    async () => {
      const r = await call(s.url, 'GET', `/api/v1/provision/${id}`, { token });
      return r.json.provision.status !== 'pending' ? r.json.provision : undefined;
    },
    20_000,
    'provision settled',
  );
}

/** The environment of this process's child running `entry`, read from /proc as an attacker would. */
function childEnviron(entry: string): Record<string, string> {
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let stat: string;
    let cmd: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue; // exited while we looked
    }
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid !== process.pid || !cmd.includes(entry)) continue;
    const env = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean);
    return Object.fromEntries(env.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  }
  throw new Error(`no child process running ${entry}`);
}

test('the NODE_OPTIONS injection is refused with 400 invalid_field naming the key; nothing is stored or run; a legit provision runs', async () => {
  const { workspace, token } = await stores.workspace('growth');
  const marker = join(dir, 'post');
  for (const [key, value] of [
    ['NODE_OPTIONS', injection(marker)],
    ['LD_PRELOAD', '/tmp/evil.so'],
    ['PATH', '/tmp/evil-bin'],
  ] as const) {
    const res = await call(s.url, 'POST', '/api/v1/provision', {
      token,
      body: { service: 'acp-handler', customer_id: 'acme', config: { ...legit(workspace.id, token), [key]: value } },
    });
    assert.equal(res.status, 400, key);
    assert.equal(res.json.error.code, 'invalid_field');
    assert.equal(res.json.error.field, `config.${key}`);
    assert.match(res.json.error.message, new RegExp(`config\\.${key} is not a config key of acp-handler`));
  }
  const bad = await call(s.url, 'POST', '/api/v1/provision', {
    token,
    body: {
      service: 'acp-handler',
      customer_id: 'acme',
      config: { ...legit(workspace.id, token), METER_URL: 'file:///etc/passwd' },
    },
  });
  assert.deepEqual([bad.status, bad.json.error.field], [400, 'config.METER_URL']);
  const { rows } = await stores.pool.query('SELECT count(*)::int AS n FROM provisions WHERE workspace_id = $1', [
    workspace.id,
  ]);
  assert.equal(rows[0].n, 0, 'a refused request stores nothing');
  await s.provisioner.settle();
  assert.equal(existsSync(marker), false, 'the injected code ran');

  // The catalog says which keys exist, so clients can build the form.
  const cat = await call(s.url, 'GET', '/api/v1/catalog');
  assert.deepEqual(
    cat.json.data[0].config.map((k: { name: string; secret: boolean }) => [k.name, k.secret]),
    [
      ['METER_URL', false],
      ['METER_WORKSPACE_ID', false],
      ['METER_API_KEY', true],
    ],
  );

  const ok = await call(s.url, 'POST', '/api/v1/provision', {
    token,
    body: { service: 'acp-handler', customer_id: 'acme', config: legit(workspace.id, token) },
  });
  assert.equal(ok.status, 202);
  const p = await settled(ok.json.provision.id, token);
  assert.equal(p.status, 'running');
  assert.equal((await fetch(`${p.url}/healthz`)).status, 200);
  await call(s.url, 'DELETE', `/api/v1/provision/${ok.json.provision.id}`, { token });
});

test("a stored config holding NODE_OPTIONS (written before the check) deploys without it: the child sees only PATH, the declared keys, PORT and HOST, never the control API's secrets", async () => {
  // The control API's own secrets live in its environment (this test process is the control API).
  process.env.STRIPE_SECRET_KEY = 'sk_live_parent_secret_must_not_leak';
  process.env.DATABASE_URL_SECRET_PROBE = 'postgres://admin:hunter2@db';
  const { workspace, token } = await stores.workspace('growth');
  const marker = join(dir, 'stored');
  const config = {
    ...legit(workspace.id, token),
    NODE_OPTIONS: injection(marker),
    STRIPE_SECRET_KEY: 'sk_tenant_override',
  };
  await stores.pool.query(
    `INSERT INTO provisions (id, workspace_id, service, customer_id, driver, status, config_enc) VALUES ($1, $2, 'acp-handler', 'legacy', 'local', 'pending', $3)`,
    ['prv_legacyinject', workspace.id, new SecretBox('').seal(JSON.stringify(config))],
  );
  try {
    await s.provisioner.resume();
    await s.provisioner.settle();
    const p = await settled('prv_legacyinject', token);
    assert.equal(p.status, 'running');
    const env = childEnviron('acp-handler.js');
    assert.deepEqual(Object.keys(env).sort(), [
      'HOST',
      'METER_API_KEY',
      'METER_URL',
      'METER_WORKSPACE_ID',
      'PATH',
      'PORT',
    ]);
    assert.equal(env.METER_API_KEY, token, 'the declared secret key is passed');
    assert.equal(
      Object.values(env).some((v) => v.includes('parent_secret') || v.includes('hunter2')),
      false,
    );
    assert.equal(existsSync(marker), false, 'the injected code ran');
  } finally {
    delete process.env.STRIPE_SECRET_KEY;
    delete process.env.DATABASE_URL_SECRET_PROBE;
    await call(s.url, 'DELETE', '/api/v1/provision/prv_legacyinject', { token });
  }
});

test('local provisioning runs only where enabled: off by default (501, nothing stored), refused outside development mode, on under npm start', async () => {
  const off = await startTestControl(stores);
  try {
    const { workspace, token } = await stores.workspace('growth');
    const res = await call(off.url, 'POST', '/api/v1/provision', {
      token,
      body: { service: 'acp-handler', customer_id: 'acme', config: legit(workspace.id, token) },
    });
    assert.deepEqual([res.status, res.json.error.code], [501, 'not_configured']);
    const { rows } = await stores.pool.query('SELECT count(*)::int AS n FROM provisions WHERE workspace_id = $1', [
      workspace.id,
    ]);
    assert.equal(rows[0].n, 0);
  } finally {
    await off.close();
  }
  const prod = { ...testEnv(stores), NODE_ENV: 'production', SECRETS_KEY: Buffer.alloc(32, 7).toString('base64') };
  assert.equal(loadControlConfig(prod).PROVISION_LOCAL_ENABLED, false);
  assert.throws(
    () => loadControlConfig({ ...prod, PROVISION_LOCAL_ENABLED: 'true' }),
    (err: unknown) =>
      err instanceof ConfigError &&
      /PROVISION_LOCAL_ENABLED=true is refused outside development mode/.test(err.message),
  );
  // `npm start`'s supervisor gives the control API development mode with local provisioning.
  const pj = JSON.parse(readFileSync(join(REPO, 'control-api/package.json'), 'utf8')) as {
    meterd: { processes: { name: string; env?: Record<string, string> }[] };
  };
  const env = pj.meterd.processes.find((p) => p.name === 'control-api')!.env!;
  assert.equal(loadControlConfig({ ...testEnv(stores), ...env }).PROVISION_LOCAL_ENABLED, true);
});
