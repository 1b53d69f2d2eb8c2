import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { join } from 'node:path';
import { ConfigError } from '@meterd/core/config';
import { listenOn } from '@meterd/core/http';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { startTestControl, testEnv } from './helpers.js';
import { REPO, exited, freePort, spawnService } from './procs.js';
import { loadControlConfig } from '../src/config.js';
import { createFront } from '../src/front/router.js';

/**
 * Issue 12, item 7: signup's limit was per process (N replicas, N× the limit), and the client
 * address came from whatever X-Forwarded-For said when the default trusted the sender. Clients
 * here are told apart by real source addresses (127.0.0.2, 127.0.0.3, … are all loopback on Linux).
 */
let stores: TestStores;
before(async () => {
  stores = await openTestStores('ctlsecrl');
});
after(async () => {
  await stores.close();
});

/** A tight limit in a Redis key prefix of its own, so only this test's signups count. */
const limits = (name: string) => ({
  SIGNUP_BURST: '2',
  SIGNUP_RATE_PER_MINUTE: '1',
  REDIS_KEY_PREFIX: `${stores.redisPrefix}:${name}`,
});

let slugs = 0;
/** POST /api/v1/signup from source address `from`, optionally claiming another address in X-Forwarded-For. */
function signup(base: string, from: string, forwardedFor?: string): Promise<number> {
  const body = JSON.stringify({ slug: `rl-co-${++slugs}`, display_name: 'X' });
  const u = new URL('/api/v1/signup', base);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname,
        method: 'POST',
        localAddress: from,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          ...(forwardedFor ? { 'x-forwarded-for': forwardedFor } : {}),
        },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode!));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

test(
  'the signup limit is shared through Redis: two control-api processes draw from one bucket per client',
  { timeout: 60_000 },
  async () => {
    const inProcess = await startTestControl(stores, limits('rl1'));
    const port = await freePort();
    const other = await spawnService(
      join(REPO, 'control-api/dist/src/main.js'),
      testEnv(stores, { ...limits('rl1'), CONTROL_API_PORT: String(port) }),
      `http://127.0.0.1:${port}/healthz`,
    );
    try {
      const viaOther = `http://127.0.0.1:${port}`;
      // The attack: spread signups over the replicas to multiply the limit.
      const codes = [];
      for (const base of [inProcess.url, viaOther, inProcess.url, viaOther])
        codes.push(await signup(base, '127.0.0.2'));
      assert.deepEqual(codes, [201, 201, 429, 429]);
      // Another client is unaffected, on either process.
      assert.equal(await signup(viaOther, '127.0.0.3'), 201);
      assert.equal(await signup(inProcess.url, '127.0.0.3'), 201);
    } finally {
      other.kill('SIGTERM');
      await exited(other);
      await inProcess.close();
    }
  },
);

test('by default no proxy is trusted: a client sending X-Forwarded-For cannot leave its bucket', async () => {
  const s = await startTestControl(stores, limits('rl2'));
  try {
    assert.deepEqual(s.cfg.TRUSTED_PROXIES, []);
    const codes = [];
    for (let i = 0; i < 4; i++) codes.push(await signup(s.url, '127.0.0.1', `198.51.100.${i}`));
    assert.deepEqual(codes, [201, 201, 429, 429]);
    assert.equal(await signup(s.url, '127.0.0.2', '198.51.100.1'), 201, 'another source address has its own bucket');
  } finally {
    await s.close();
  }
});

test('behind a trusted proxy (the front router), each client has its own bucket and a spoofed X-Forwarded-For does not help', async () => {
  const s = await startTestControl(stores, { ...limits('rl3'), TRUSTED_PROXIES: '127.0.0.1' });
  const front = createFront({
    ingest: new URL('http://127.0.0.1:9'),
    aggregator: new URL('http://127.0.0.1:9'),
    control: new URL(s.url),
  });
  const base = `http://127.0.0.1:${await listenOn(front, 0, '127.0.0.1')}`;
  try {
    // Client 127.0.0.2 claims a fresh address each time; the proxy appends the real one, which counts.
    const codes = [];
    for (let i = 0; i < 3; i++) codes.push(await signup(base, '127.0.0.2', `203.0.113.${i}`));
    assert.deepEqual(codes, [201, 201, 429]);
    // A second client behind the same proxy is not in the first one's bucket.
    assert.deepEqual([await signup(base, '127.0.0.3'), await signup(base, '127.0.0.3')], [201, 201]);
    // Straight to the control API from an address that is not a trusted proxy: the header is ignored.
    assert.equal(await signup(s.url, '127.0.0.2', '203.0.113.50'), 429);
  } finally {
    front.server.closeAllConnections();
    await front.close();
    await s.close();
  }
  assert.throws(
    () => loadControlConfig(testEnv(stores, { TRUSTED_PROXIES: '10.0.0.0/33,proxy.internal' })),
    (err: unknown) =>
      err instanceof ConfigError && /TRUSTED_PROXIES=.*is not an IP address or CIDR block/.test(err.message),
  );
  assert.deepEqual(loadControlConfig(testEnv(stores, { TRUSTED_PROXIES: '10.0.0.0/8, ::1' })).TRUSTED_PROXIES, [
    '10.0.0.0/8',
    '::1',
  ]);
});
