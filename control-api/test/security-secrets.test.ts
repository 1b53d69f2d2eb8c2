import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createCipheriv, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { inTransaction } from '@meterd/core/store';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { OPERATOR_KEY, Receiver, call, eventually, verifySignature, startTestControl, testEnv } from './helpers.js';
import { REPO, exited, freePort, spawnService } from './procs.js';
import { SecretBox, keyId } from '../src/crypto/secret-box.js';
import { rewrapAll } from '../src/crypto/rewrap.js';
import { emitEvent } from '../src/webhooks/outbox.js';

/**
 * Issue 12, item 6: secrets at rest fell back to a built-in (public) key unless NODE_ENV=production,
 * there was no way to rotate the key, and Kubernetes ingress hosts `<customer>-<service>.<domain>`
 * let workspace B claim workspace A's host by choosing the same customer_id.
 */
let stores: TestStores;
before(async () => {
  stores = await openTestStores('ctlsecret');
});
after(async () => {
  await stores.close();
});

const K1 = randomBytes(32).toString('base64');
const K2 = randomBytes(32).toString('base64');

/** Runs control-api's main.js with `env` (no inherited variables) until it exits; its exit code and stderr. */
function runMain(env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(REPO, 'control-api/dist/src/main.js')], {
      env: { PATH: process.env.PATH ?? '', ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (c) => (stderr += c));
    child.on('exit', (code) => resolve({ code, stderr }));
  });
}

test(
  'outside development mode the control API refuses to start without SECRETS_KEY, with a clear message; with a key it starts',
  { timeout: 60_000 },
  async () => {
    const { NODE_ENV: _dev, ...base } = testEnv(stores, { CONTROL_API_PORT: String(await freePort()) });
    const modes: Record<string, string>[] = [{}, { NODE_ENV: 'production' }, { NODE_ENV: 'staging' }];
    for (const mode of modes) {
      const r = await runMain({ ...base, ...mode });
      assert.equal(r.code, 1, JSON.stringify(mode));
      assert.match(
        r.stderr,
        /SECRETS_KEY is required outside development mode \(NODE_ENV=(production|staging)\).*openssl rand -base64 32/,
      );
    }
    const port = await freePort();
    const ok = await spawnService(
      join(REPO, 'control-api/dist/src/main.js'),
      { ...base, SECRETS_KEY: K1, CONTROL_API_PORT: String(port) },
      `http://127.0.0.1:${port}/healthz`,
    );
    ok.kill('SIGTERM');
    await exited(ok);
  },
);

test('ciphertexts carry a key id: sealed with SECRETS_KEY, opened by id; v1 values without an id still open; tampering and unknown ids are refused', () => {
  const box = new SecretBox(K1);
  const sealed = box.seal('whsec_abc');
  assert.match(sealed, new RegExp(`^v2\\.${keyId(Buffer.from(K1, 'base64'))}\\.`));
  assert.equal(box.open(sealed), 'whsec_abc');
  assert.equal(new SecretBox(K2, [K1]).open(sealed), 'whsec_abc', 'an old key opens what it sealed');
  assert.throws(
    () => new SecretBox(K2).open(sealed),
    /encrypted under key id [0-9a-f]{8}, which is neither SECRETS_KEY nor in SECRETS_KEYS_OLD/,
  );
  assert.throws(
    () => new SecretBox('').open(sealed),
    /METERD_SECRET_UNREADABLE|neither SECRETS_KEY/,
    'the public development key opens nothing sealed under a real key',
  );
  const raw = Buffer.from(sealed.split('.')[2]!, 'base64');
  raw.writeUInt8(raw.readUInt8(raw.length - 1) ^ 1, raw.length - 1);
  assert.throws(() => box.open(`v2.${sealed.split('.')[1]}.${raw.toString('base64')}`), /tampered or corrupt/);

  // The format written before key ids: v1.<base64 nonce|tag|ciphertext>, under the key of the day.
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', Buffer.from(K1, 'base64'), iv);
  const body = Buffer.concat([c.update('legacy', 'utf8'), c.final()]);
  const v1 = `v1.${Buffer.concat([iv, c.getAuthTag(), body]).toString('base64')}`;
  assert.equal(new SecretBox(K1).open(v1), 'legacy');
  assert.equal(new SecretBox(K2, [K1]).open(v1), 'legacy', 'after rotation the legacy key is an old key');
  assert.throws(() => new SecretBox(K2).open(v1), /no configured key/);
  assert.equal(new SecretBox(K2, [K1]).isStale(v1), true);
});

test(
  'rotation: SECRETS_KEY=new with SECRETS_KEYS_OLD=old keeps deliveries signed; rewrap re-seals every stored secret; then the old key can go',
  { timeout: 60_000 },
  async () => {
    const rx = await new Receiver().start();
    const emit = (ws: string) =>
      inTransaction(stores.pool, (c) => emitEvent(c, ws, 'meter.quota.warning', { threshold_percent: 80 }));
    try {
      const w = await stores.workspace('free');
      const before = await startTestControl(stores, { NODE_ENV: 'production', SECRETS_KEY: K1 });
      let hook: { id: string; secret: string };
      try {
        hook = (
          await call(before.url, 'POST', `/api/v1/workspaces/${w.workspace.id}/webhooks`, {
            token: w.token,
            body: { url: rx.url },
            headers: { 'idempotency-key': 'rotate-1' },
          })
        ).json.webhook;
      } finally {
        await before.close();
      }
      const { rows } = await stores.pool.query('SELECT secret_enc FROM webhook_endpoints WHERE id = $1', [hook.id]);
      assert.throws(() => new SecretBox('').open(rows[0].secret_enc), 'not readable with the public development key');

      const rotating = await startTestControl(stores, {
        NODE_ENV: 'production',
        SECRETS_KEY: K2,
        SECRETS_KEYS_OLD: K1,
      });
      try {
        await emit(w.workspace.id);
        const [r] = await rx.waitFor(1);
        assert.equal(verifySignature(r!.body, r!.headers['stateset-signature'] as string, hook.secret), true);
      } finally {
        await rotating.close();
      }
      const box = new SecretBox(K2, [K1]);
      const done = await rewrapAll(stores.pool, box);
      assert.ok(done.webhook_endpoints! >= 1);
      assert.equal(done.idempotency_keys, 1, 'the stored answer of the idempotent create is re-sealed too');
      const { rows: after } = await stores.pool.query('SELECT secret_enc FROM webhook_endpoints');
      assert.ok(after.every((r) => !box.isStale(r.secret_enc)));

      const rotated = await startTestControl(stores, { NODE_ENV: 'production', SECRETS_KEY: K2 });
      try {
        await emit(w.workspace.id);
        const got = await rx.waitFor(2);
        assert.equal(verifySignature(got[1]!.body, got[1]!.headers['stateset-signature'] as string, hook.secret), true);
        const replay = await call(rotated.url, 'POST', `/api/v1/workspaces/${w.workspace.id}/webhooks`, {
          token: w.token,
          body: { url: rx.url },
          headers: { 'idempotency-key': 'rotate-1' },
        });
        assert.equal(replay.json.webhook.secret, hook.secret, 'the replay opens under the new key alone');
      } finally {
        await rotated.close();
      }
    } finally {
      await rx.close();
    }
  },
);

test(
  'ingress hosts include the workspace slug; a host already in use is refused (409 host_taken, nothing stored) until it is freed',
  { timeout: 60_000 },
  async () => {
    // A Kubernetes API server that accepts every apply and delete.
    const kube: Server = createServer((req, res) => {
      req.resume();
      req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{}'));
    });
    await new Promise<void>((r) => kube.listen(0, '127.0.0.1', r));
    const s = await startTestControl(stores, {
      PROVISION_DRIVER: 'kubernetes',
      KUBE_API_URL: `http://127.0.0.1:${(kube.address() as { port: number }).port}`,
      PROVISION_DOMAIN: 'handlers.example.com',
    });
    const provision = (ws: string, customer: string) =>
      call(s.url, 'POST', '/api/v1/provision', {
        token: OPERATOR_KEY,
        body: {
          workspace_id: ws,
          service: 'acp-handler',
          customer_id: customer,
          config: { METER_URL: 'https://meterd.example', METER_WORKSPACE_ID: ws, METER_API_KEY: 'sks_x' },
        },
      });
    const workspace = async (slug: string) => {
      const { workspace: w } = await stores.workspace('growth');
      await stores.pool.query('UPDATE workspaces SET slug = $2 WHERE id = $1', [w.id, slug]);
      return w.id;
    };
    const settledUrl = (id: string) =>
      eventually(
        async () => {
          const r = await call(s.url, 'GET', `/api/v1/provision/${id}`, { token: OPERATOR_KEY });
          return r.json.provision.status === 'running' ? (r.json.provision.url as string) : undefined;
        },
        10_000,
        'provision running',
      );
    try {
      const a = await workspace('acp-handler-yyy');
      const b = await workspace('yyy');
      const c = await workspace('other-shop');
      // The old attack: B names the same customer_id as A. Hosts now differ by slug, so both are served.
      const pa = await provision(a, 'x');
      assert.equal(pa.status, 202);
      assert.equal(
        await settledUrl(pa.json.provision.id),
        'https://x-acp-handler-acp-handler-yyy.handlers.example.com',
      );
      const pc = await provision(c, 'x');
      assert.equal(pc.status, 202);
      assert.equal(await settledUrl(pc.json.provision.id), 'https://x-acp-handler-other-shop.handlers.example.com');

      // B spells A's host with another split of the hyphens: refused, and nothing is stored.
      const taken = await provision(b, 'x-acp-handler');
      assert.deepEqual(
        [taken.status, taken.json.error.code, taken.json.error.field],
        [409, 'host_taken', 'customer_id'],
      );
      const { rows } = await stores.pool.query('SELECT count(*)::int AS n FROM provisions WHERE workspace_id = $1', [
        b,
      ]);
      assert.equal(rows[0].n, 0);
      // A label past 63 characters is a 400 naming customer_id.
      const long = await provision(a, 'c'.repeat(40));
      assert.deepEqual([long.status, long.json.error.field], [400, 'customer_id']);

      // Once A deprovisions, the host is free again.
      assert.equal(
        (await call(s.url, 'DELETE', `/api/v1/provision/${pa.json.provision.id}`, { token: OPERATOR_KEY })).status,
        200,
      );
      assert.equal((await provision(b, 'x-acp-handler')).status, 202);
      await s.provisioner.settle();
    } finally {
      await s.close();
      kube.close();
    }
  },
);
