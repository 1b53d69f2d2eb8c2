import { test } from 'node:test';
import assert from 'node:assert/strict';
import { validateMeterEvent, parseMeterJson, Rejection, MAX_EVENT_AGE_MS, MAX_EVENT_SKEW_MS } from './meter-event.js';
import { parseRfc3339, formatRfc3339 } from './time.js';

const NOW = Date.UTC(2026, 10, 22, 12, 0, 0);
const base = { workspace_id: 'ws_abc', event_type: 'checkout.completed', idempotency_key: 'order_1' };

function code(v: unknown): string | undefined {
  const r = validateMeterEvent(v, NOW);
  return r instanceof Rejection ? `${r.code}${r.field ? `:${r.field}` : ''}` : undefined;
}

test('defaults: quantity 1, gmv 0, USD, occurred_at = now', () => {
  assert.deepEqual(validateMeterEvent(base, NOW), {
    ...base,
    quantity: 1,
    gmv_cents: 0,
    currency: 'USD',
    occurred_at_ms: NOW,
  });
});

test('currency is ISO 4217, case-insensitive, stored upper-case', () => {
  const r = validateMeterEvent({ ...base, currency: 'eur' }, NOW);
  assert.ok(!(r instanceof Rejection));
  assert.equal(r.currency, 'EUR');
  assert.equal(code({ ...base, currency: 'XXX1' }), 'invalid_currency:currency');
  assert.equal(code({ ...base, currency: 'ZZZ' }), 'invalid_currency:currency');
  assert.equal(code({ ...base, currency: 5 }), 'invalid_currency:currency');
});

test('integers: whole and within ±(2^53−1), negatives included (refunds); never rounded', () => {
  assert.equal(code({ ...base, gmv_cents: Number.MAX_SAFE_INTEGER }), undefined);
  assert.equal(code({ ...base, gmv_cents: JSON.parse('9007199254740993') }), 'integer_out_of_range:gmv_cents');
  assert.equal(code({ ...base, gmv_cents: JSON.parse('9007199254740992') }), 'integer_out_of_range:gmv_cents');
  assert.equal(code({ ...base, quantity: 1.5 }), 'integer_out_of_range:quantity');
  assert.equal(code({ ...base, quantity: -1 }), undefined);
  assert.equal(code({ ...base, gmv_cents: -Number.MAX_SAFE_INTEGER }), undefined);
  assert.equal(code({ ...base, gmv_cents: JSON.parse('-9007199254740992') }), 'integer_out_of_range:gmv_cents');
  assert.equal(code({ ...base, quantity: Infinity }), 'integer_out_of_range:quantity');
  assert.equal(code({ ...base, quantity: '1' }), 'invalid_field:quantity');
  assert.equal(code({ ...base, quantity: null }), 'invalid_field:quantity');
  assert.equal(code({ ...base, quantity: 0 }), undefined);
});

test('required fields, shapes and unknown fields', () => {
  assert.equal(code(null), 'invalid_body');
  assert.equal(code([base]), 'invalid_body');
  assert.equal(code({ ...base, workspace_id: undefined }), 'missing_field:workspace_id');
  assert.equal(code({ ...base, workspace_id: 'acme' }), 'invalid_field:workspace_id');
  assert.equal(code({ ...base, workspace_id: 'ws_{x}' }), 'invalid_field:workspace_id');
  assert.equal(code({ ...base, event_type: '' }), 'invalid_field:event_type');
  assert.equal(code({ ...base, event_type: 'a'.repeat(101) }), 'invalid_field:event_type');
  assert.equal(code({ ...base, event_type: 'a'.repeat(100) }), undefined);
  assert.equal(code({ ...base, idempotency_key: '' }), 'invalid_field:idempotency_key');
  assert.equal(code({ ...base, idempotency_key: 'x'.repeat(255) }), undefined);
  assert.equal(code({ ...base, idempotency_key: 'x\u007f' }), 'invalid_field:idempotency_key');
  assert.equal(code({ ...base, idempotency_key: 'ünïcødé:{}|' }), undefined);
  assert.equal(code({ ...base, extra: 1 }), 'unknown_field:extra');
});

test('occurred_at: RFC 3339 only, within 35 days back and 5 minutes ahead', () => {
  const at = (s: string) => validateMeterEvent({ ...base, occurred_at: s }, NOW);
  assert.deepEqual((at('2026-11-22T11:00:00Z') as any).occurred_at_ms, Date.UTC(2026, 10, 22, 11));
  assert.deepEqual((at('2026-11-22T13:00:00+02:00') as any).occurred_at_ms, Date.UTC(2026, 10, 22, 11));
  assert.deepEqual(
    (at('2026-11-22T06:30:00.123456-05:00') as any).occurred_at_ms,
    Date.UTC(2026, 10, 22, 11, 30, 0, 123),
  );
  assert.equal(code({ ...base, occurred_at: formatRfc3339(NOW - MAX_EVENT_AGE_MS) }), undefined);
  assert.equal(
    code({ ...base, occurred_at: formatRfc3339(NOW - MAX_EVENT_AGE_MS - 1000) }),
    'timestamp_out_of_window:occurred_at',
  );
  assert.equal(code({ ...base, occurred_at: formatRfc3339(NOW + MAX_EVENT_SKEW_MS) }), undefined);
  assert.equal(
    code({ ...base, occurred_at: formatRfc3339(NOW + MAX_EVENT_SKEW_MS + 1000) }),
    'timestamp_out_of_window:occurred_at',
  );
  for (const bad of [
    '2026-11-22',
    '2026-11-22 11:00:00Z',
    '2026-11-22T11:00:00',
    '2026-02-29T00:00:00Z',
    '2026-11-31T00:00:00Z',
    '2026-11-22T24:00:00Z',
    '2026-11-22T11:00:60Z',
    '1795000000',
    'now',
  ]) {
    assert.ok(Number.isNaN(parseRfc3339(bad)), bad);
  }
  assert.equal(parseRfc3339('2028-02-29T00:00:00Z'), Date.UTC(2028, 1, 29));
  assert.equal(code({ ...base, occurred_at: 1795000000 }), 'invalid_timestamp:occurred_at');
});

test('numbers written with a fraction or exponent are refused per event, never rounded', () => {
  const ws = '"workspace_id":"ws_abc","event_type":"e","idempotency_key"';
  const one = (body: string) => code(parseMeterJson(body));
  assert.equal(one(`{${ws}:"a","gmv_cents":4299.0000000000001}`), 'invalid_field:gmv_cents');
  assert.equal(one(`{${ws}:"a","quantity":1E2}`), 'invalid_field:quantity');
  assert.equal(one(`{${ws}:"a","quantity":-0.0}`), 'invalid_field:quantity');
  assert.equal(one(`{${ws}:"a","gmv_cents":4299}`), undefined);
  // Strings that look like such numbers are left alone, escaped quotes included.
  const r = validateMeterEvent(parseMeterJson(`{${ws}:"order_5.1e3 \\"9.5\\"","gmv_cents":7}`), NOW);
  assert.ok(!(r instanceof Rejection));
  assert.equal(r.idempotency_key, 'order_5.1e3 "9.5"');
  assert.equal(r.gmv_cents, 7);
  // In a batch only the event carrying the bad number is refused.
  const batch = parseMeterJson(`{"events":[{${ws}:"x","gmv_cents":1.5},{${ws}:"y","gmv_cents":2}]}`) as {
    events: unknown[];
  };
  assert.equal(code(batch.events[0]), 'invalid_field:gmv_cents');
  assert.equal(code(batch.events[1]), undefined);
  assert.throws(() => parseMeterJson('{"a":1.5'), SyntaxError);
});

test('idempotency keys must be well-formed Unicode (a lone surrogate has no UTF-8 form)', () => {
  assert.equal(code({ ...base, idempotency_key: 'poison\ud800' }), 'invalid_field:idempotency_key');
  assert.equal(code({ ...base, idempotency_key: 'x\udc00' }), 'invalid_field:idempotency_key');
  assert.equal(code({ ...base, idempotency_key: 'emoji \u{1F600}' }), undefined);
});

test('properties: a flat object of strings, bounded, each bad entry refused by name; absent allocates nothing', () => {
  const r = validateMeterEvent({ ...base, properties: { region: 'eu-west', 'model.name': 'gpt-4', empty: '' } }, NOW);
  assert.ok(!(r instanceof Rejection));
  assert.deepEqual(r.prop_keys, ['region', 'model.name', 'empty']);
  assert.deepEqual(r.prop_values, ['eu-west', 'gpt-4', '']);
  const none = validateMeterEvent(base, NOW);
  assert.ok(!(none instanceof Rejection) && !('prop_keys' in none));
  const empty = validateMeterEvent({ ...base, properties: {} }, NOW);
  assert.ok(!(empty instanceof Rejection) && !('prop_keys' in empty));
  const sixteen = Object.fromEntries(Array.from({ length: 16 }, (_, i) => [`k${i}`, 'v']));
  assert.equal(code({ ...base, properties: sixteen }), undefined);
  assert.equal(code({ ...base, properties: { ...sixteen, k16: 'v' } }), 'invalid_field:properties');
  assert.equal(code({ ...base, properties: { ['k'.repeat(64)]: 'v' } }), undefined);
  assert.equal(code({ ...base, properties: { ['k'.repeat(65)]: 'v' } }), 'invalid_field:properties');
  assert.equal(code({ ...base, properties: { 'bad key': 'v' } }), 'invalid_field:properties');
  assert.equal(code({ ...base, properties: { region: 'v'.repeat(256) } }), undefined);
  assert.equal(code({ ...base, properties: { region: 'v'.repeat(257) } }), 'invalid_field:properties.region');
  assert.equal(code({ ...base, properties: { region: 5 } }), 'invalid_field:properties.region');
  assert.equal(code({ ...base, properties: { region: { nested: 'x' } } }), 'invalid_field:properties.region');
  assert.equal(code({ ...base, properties: { region: 'a\nb' } }), 'invalid_field:properties.region');
  assert.equal(code({ ...base, properties: { region: '\ud800' } }), 'invalid_field:properties.region');
  assert.equal(code({ ...base, properties: ['a'] }), 'invalid_field:properties');
  assert.equal(code({ ...base, properties: 'region=eu' }), 'invalid_field:properties');
  assert.equal(code({ ...base, properties: null }), 'invalid_field:properties');
  // Top-level strictness stays: a misspelt field is still refused.
  assert.equal(code({ ...base, propertie: { region: 'eu' } }), 'unknown_field:propertie');
});
