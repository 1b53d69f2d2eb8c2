import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { ERROR_CODES } from '@meterd/core/errors';
import { periodOf } from '@meterd/core/plans';
import { revokeApiKey } from '@meterd/core/store';
import { startTestIngest, post, event, storedCounts, waitShipped } from './helpers.js';

/**
 * A corpus of bad requests. Each must get its documented status and code, and none may add a row
 * to ClickHouse or move the quota counter (checked after the whole corpus, against one good event
 * sent first so that "nothing changed" is measured against a store that demonstrably works).
 */
let stores: TestStores;
let ingest: Awaited<ReturnType<typeof startTestIngest>>;
before(async () => {
  stores = await openTestStores('badinput');
  ingest = await startTestIngest(stores);
});
after(async () => {
  await ingest.close(0);
  await stores.close();
});

/** Sends raw bytes with exact headers (fetch would fix up a wrong content-length). */
function raw(
  path: string,
  body: Buffer | string,
  headers: Record<string, string>,
): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const req = request(ingest.url + path, { method: 'POST', headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('bad inputs get their documented status and code and change nothing', async () => {
  const { workspace, token } = await stores.workspace('free');
  const other = await stores.workspace('free');
  const revoked = await stores.workspace('free');
  await revokeApiKey(stores.pool, stores.redis, revoked.workspace.id, revoked.keyId);
  const ws = workspace.id;
  const good = await post(ingest.url, '/api/v1/meter', event(ws, 'baseline'), token);
  assert.equal(good.status, 202);
  const now = Date.now();
  const iso = (ms: number) => new Date(ms).toISOString();

  const cases: [string, () => Promise<{ status: number; body: any }>, string, string?][] = [
    ['malformed JSON', () => post(ingest.url, '/api/v1/meter', '{"workspace_id":', token), 'invalid_json'],
    ['JSON array instead of object', () => post(ingest.url, '/api/v1/meter', '[1,2]', token), 'invalid_body'],
    ['JSON null', () => post(ingest.url, '/api/v1/meter', 'null', token), 'invalid_body'],
    [
      '2 MB body',
      () =>
        post(
          ingest.url,
          '/api/v1/meter/batch',
          JSON.stringify({ events: [event(ws, 'x', { event_type: 'a'.repeat(2 << 20) })] }),
          token,
        ),
      'payload_too_large',
    ],
    [
      '2 MB body, chunked (no content-length)',
      () =>
        raw('/api/v1/meter', Buffer.alloc(2 << 20, 0x20), {
          authorization: `Bearer ${token}`,
          'content-type': 'application/json',
          'transfer-encoding': 'chunked',
        }),
      'payload_too_large',
    ],
    [
      'wrong content type',
      () => post(ingest.url, '/api/v1/meter', event(ws, 'ct'), token, { 'content-type': 'text/plain' }),
      'unsupported_media_type',
    ],
    [
      'quantity as string',
      () => post(ingest.url, '/api/v1/meter', event(ws, 'w1', { quantity: '5' }), token),
      'invalid_field',
      'quantity',
    ],
    [
      'gmv_cents as float',
      () => post(ingest.url, '/api/v1/meter', event(ws, 'w2', { gmv_cents: 12.5 }), token),
      'invalid_field',
      'gmv_cents',
    ],
    [
      'gmv_cents a hair above a whole number (JSON.parse would round it)',
      () =>
        post(
          ingest.url,
          '/api/v1/meter',
          `{"workspace_id":"${ws}","event_type":"checkout.completed","gmv_cents":4299.0000000000001,"idempotency_key":"hair"}`,
          token,
        ),
      'invalid_field',
      'gmv_cents',
    ],
    [
      'quantity with an exponent',
      () =>
        post(
          ingest.url,
          '/api/v1/meter',
          `{"workspace_id":"${ws}","event_type":"checkout.completed","quantity":1e2,"idempotency_key":"exp"}`,
          token,
        ),
      'invalid_field',
      'quantity',
    ],
    [
      'idempotency_key with a lone surrogate',
      () =>
        post(
          ingest.url,
          '/api/v1/meter',
          `{"workspace_id":"${ws}","event_type":"checkout.completed","idempotency_key":"poison\\ud800"}`,
          token,
        ),
      'invalid_field',
      'idempotency_key',
    ],
    [
      'gmv_cents 2^53+1',
      () =>
        post(
          ingest.url,
          '/api/v1/meter',
          `{"workspace_id":"${ws}","event_type":"checkout.completed","gmv_cents":9007199254740993,"idempotency_key":"big"}`,
          token,
        ),
      'integer_out_of_range',
      'gmv_cents',
    ],
    [
      'gmv_cents 1e400',
      () =>
        post(
          ingest.url,
          '/api/v1/meter',
          `{"workspace_id":"${ws}","event_type":"checkout.completed","gmv_cents":1e400,"idempotency_key":"inf"}`,
          token,
        ),
      'invalid_field',
      'gmv_cents',
    ],
    [
      'gmv_cents -(2^53+1)',
      () =>
        post(
          ingest.url,
          '/api/v1/meter',
          `{"workspace_id":"${ws}","event_type":"checkout.completed","gmv_cents":-9007199254740993,"idempotency_key":"small"}`,
          token,
        ),
      'integer_out_of_range',
      'gmv_cents',
    ],
    [
      'event_type missing',
      () => post(ingest.url, '/api/v1/meter', { workspace_id: ws, idempotency_key: 'm' }, token),
      'missing_field',
      'event_type',
    ],
    [
      'idempotency_key missing',
      () => post(ingest.url, '/api/v1/meter', { workspace_id: ws, event_type: 'a' }, token),
      'missing_field',
      'idempotency_key',
    ],
    [
      'idempotency_key too long',
      () => post(ingest.url, '/api/v1/meter', event(ws, 'k'.repeat(256)), token),
      'invalid_field',
      'idempotency_key',
    ],
    [
      'idempotency_key with a control character',
      () => post(ingest.url, '/api/v1/meter', event(ws, 'a\nb'), token),
      'invalid_field',
      'idempotency_key',
    ],
    [
      'event_type with a colon',
      () => post(ingest.url, '/api/v1/meter', event(ws, 'c', { event_type: 'a:b' }), token),
      'invalid_field',
      'event_type',
    ],
    [
      'unknown field',
      () => post(ingest.url, '/api/v1/meter', event(ws, 'u', { gmv_cent: 5 }), token),
      'unknown_field',
      'gmv_cent',
    ],
    [
      'not ISO 4217',
      () => post(ingest.url, '/api/v1/meter', event(ws, 'cur', { currency: 'XYZ' }), token),
      'invalid_currency',
      'currency',
    ],
    [
      'date not RFC 3339',
      () => post(ingest.url, '/api/v1/meter', event(ws, 'd1', { occurred_at: '22/11/2026' }), token),
      'invalid_timestamp',
      'occurred_at',
    ],
    [
      'date that does not exist',
      () => post(ingest.url, '/api/v1/meter', event(ws, 'd2', { occurred_at: '2026-02-30T00:00:00Z' }), token),
      'invalid_timestamp',
      'occurred_at',
    ],
    [
      'date without zone',
      () => post(ingest.url, '/api/v1/meter', event(ws, 'd3', { occurred_at: '2026-11-01T00:00:00' }), token),
      'invalid_timestamp',
      'occurred_at',
    ],
    [
      'date 36 days old',
      () => post(ingest.url, '/api/v1/meter', event(ws, 'd4', { occurred_at: iso(now - 36 * 86_400_000) }), token),
      'timestamp_out_of_window',
      'occurred_at',
    ],
    [
      'date 10 minutes ahead',
      () => post(ingest.url, '/api/v1/meter', event(ws, 'd5', { occurred_at: iso(now + 600_000) }), token),
      'timestamp_out_of_window',
      'occurred_at',
    ],
    [
      '101-event batch',
      () =>
        post(
          ingest.url,
          '/api/v1/meter/batch',
          { events: Array.from({ length: 101 }, (_, i) => event(ws, `bb-${i}`)) },
          token,
        ),
      'batch_too_large',
      'events',
    ],
    [
      'batch that is not a batch',
      () => post(ingest.url, '/api/v1/meter/batch', event(ws, 'nb'), token),
      'invalid_body',
      'events',
    ],
    ['empty batch', () => post(ingest.url, '/api/v1/meter/batch', { events: [] }, token), 'invalid_body', 'events'],
    ['missing key', () => post(ingest.url, '/api/v1/meter', event(ws, 'nk')), 'missing_api_key'],
    [
      'not a bearer header',
      () => post(ingest.url, '/api/v1/meter', event(ws, 'nb2'), undefined, { authorization: `Basic ${token}` }),
      'invalid_api_key',
    ],
    ['malformed key', () => post(ingest.url, '/api/v1/meter', event(ws, 'mk'), 'sks_short'), 'invalid_api_key'],
    [
      'unknown key',
      () => post(ingest.url, '/api/v1/meter', event(ws, 'uk'), 'sks_' + 'A'.repeat(43)),
      'invalid_api_key',
    ],
    [
      'revoked key',
      () => post(ingest.url, '/api/v1/meter', event(revoked.workspace.id, 'rk'), revoked.token),
      'invalid_api_key',
    ],
    [
      "another workspace's id",
      () => post(ingest.url, '/api/v1/meter', event(other.workspace.id, 'ow'), token),
      'workspace_mismatch',
      'workspace_id',
    ],
  ];

  for (const [name, send, code, field] of cases) {
    const r = await send();
    assert.equal(r.status, ERROR_CODES[code as keyof typeof ERROR_CODES].status, `${name}: status`);
    assert.equal(r.body?.error?.code, code, `${name}: code`);
    assert.equal(typeof r.body.error.message, 'string', `${name}: message`);
    if (field !== undefined) assert.equal(r.body.error.field, field, `${name}: field`);
  }

  // A key without meter:write.
  const readOnly = await stores.workspace('free', ['meter:read']);
  const scope = await post(ingest.url, '/api/v1/meter', event(readOnly.workspace.id, 's'), readOnly.token);
  assert.equal(scope.status, 403);
  assert.equal(scope.body.error.code, 'insufficient_scope');

  await waitShipped(ingest);
  for (const w of [workspace, other.workspace, revoked.workspace, readOnly.workspace]) {
    const expect = w.id === ws ? { total: 1, distinct: 1 } : { total: 0, distinct: 0 };
    assert.deepEqual(await storedCounts(stores, w.id), expect, `rows of ${w.id}`);
    const used = Number((await stores.redis.get(`${stores.redisPrefix}:{${w.id}}:q:${periodOf(now)}`)) ?? 0);
    assert.equal(used, w.id === ws ? 1 : 0, `quota counter of ${w.id}`);
  }
  const dedupeKeys = await stores.redis.keys(`${stores.redisPrefix}:{${ws}}:d:*`);
  assert.deepEqual(dedupeKeys, [`${stores.redisPrefix}:{${ws}}:d:checkout.completed:baseline`]);
});
