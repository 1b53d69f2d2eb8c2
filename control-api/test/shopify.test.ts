import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { call, startTestControl } from './helpers.js';
import { shopifyHmac } from '../src/shopify/oauth.js';
import { SecretBox } from '../src/crypto/secret-box.js';

/**
 * Shopify connect end to end, with a real local server standing in for the shop's token endpoint
 * (SHOPIFY_TOKEN_URL_TEMPLATE): start → authorize URL with a state; callback → HMAC and state
 * checked, code exchanged, token stored encrypted, shopify.connected emitted, redirect to onboarding.
 */
const SECRET = 'shpss_test_secret';
const SECRETS_KEY = randomBytes(32).toString('base64');
let stores: TestStores;
let tokenServer: Server;
let tokenUrl: string;
const exchanges: { shop: string; body: Record<string, string> }[] = [];

before(async () => {
  stores = await openTestStores('shopify');
  tokenServer = createServer((req, res) => {
    let raw = '';
    req.on('data', (c) => (raw += c));
    req.on('end', () => {
      exchanges.push({ shop: req.url!.split('/')[1]!, body: JSON.parse(raw) });
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ access_token: 'shpat_secret_token_123', scope: 'read_orders' }));
    });
  });
  await new Promise<void>((r) => tokenServer.listen(0, '127.0.0.1', () => r()));
  tokenUrl = `http://127.0.0.1:${(tokenServer.address() as { port: number }).port}`;
});
after(async () => {
  tokenServer.close();
  await stores.close();
});

test('Shopify connect: authorize URL, HMAC- and state-checked callback, encrypted token, shopify.connected, redirect', async () => {
  const s = await startTestControl(stores, {
    SHOPIFY_API_KEY: 'app_client_id',
    SHOPIFY_API_SECRET: SECRET,
    SHOPIFY_TOKEN_URL_TEMPLATE: `${tokenUrl}/{shop}/token`,
    PUBLIC_BASE_URL: 'http://127.0.0.1:8080',
    SECRETS_KEY,
  });
  try {
    const { workspace, token } = await stores.workspace('free');
    const bad = await call(s.url, 'POST', `/api/v1/workspaces/${workspace.id}/shopify/connect`, {
      token,
      body: { shop_domain: 'evil.example.com' },
    });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.code, 'invalid_field');

    const start = await call(s.url, 'POST', `/api/v1/workspaces/${workspace.id}/shopify/connect`, {
      token,
      body: { shop_domain: 'Acme-Store.myshopify.com' },
    });
    assert.equal(start.status, 200, start.text);
    const authorize = new URL(start.json.authorize_url);
    assert.equal(authorize.origin + authorize.pathname, 'https://acme-store.myshopify.com/admin/oauth/authorize');
    assert.equal(authorize.searchParams.get('client_id'), 'app_client_id');
    assert.equal(authorize.searchParams.get('redirect_uri'), 'http://127.0.0.1:8080/api/v1/shopify/callback');
    const state = authorize.searchParams.get('state')!;

    const query: Record<string, string> = {
      code: 'auth_code_1',
      shop: 'acme-store.myshopify.com',
      state,
      timestamp: String(Math.floor(Date.now() / 1000)),
    };
    const forged = await call(
      s.url,
      'GET',
      `/api/v1/shopify/callback?${new URLSearchParams({ ...query, hmac: shopifyHmac(query, 'wrong secret') })}`,
    );
    assert.equal(forged.status, 400);
    assert.equal(forged.json.error.code, 'invalid_signature');
    assert.equal(exchanges.length, 0, 'a forged callback never reaches the token exchange');

    const ok = await call(
      s.url,
      'GET',
      `/api/v1/shopify/callback?${new URLSearchParams({ ...query, hmac: shopifyHmac(query, SECRET) })}`,
    );
    assert.equal(ok.status, 302);
    assert.equal(ok.headers.get('location'), 'http://127.0.0.1:8080/dashboard/onboarding?shopify=connected');
    assert.deepEqual(exchanges, [
      {
        shop: 'acme-store.myshopify.com',
        body: { client_id: 'app_client_id', client_secret: SECRET, code: 'auth_code_1' },
      },
    ]);

    const { rows } = await stores.pool.query(
      'SELECT access_token_enc, scopes FROM shopify_connections WHERE workspace_id = $1',
      [workspace.id],
    );
    assert.equal(rows.length, 1);
    assert.ok(!rows[0].access_token_enc.includes('shpat_secret_token_123'), 'stored encrypted');
    assert.equal(new SecretBox(SECRETS_KEY).open(rows[0].access_token_enc), 'shpat_secret_token_123');
    const events = await stores.pool.query(
      `SELECT body FROM outbox_events WHERE workspace_id = $1 AND event = 'shopify.connected'`,
      [workspace.id],
    );
    assert.equal(events.rowCount, 1);
    assert.equal(JSON.parse(events.rows[0].body).data.shop_domain, 'acme-store.myshopify.com');

    const replay = await call(
      s.url,
      'GET',
      `/api/v1/shopify/callback?${new URLSearchParams({ ...query, hmac: shopifyHmac(query, SECRET) })}`,
    );
    assert.equal(replay.status, 400, 'a state is single-use');
    assert.equal(replay.json.error.code, 'invalid_signature');
  } finally {
    await s.close();
  }
});
