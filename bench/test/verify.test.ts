import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { KeyTracker } from '../src/load/tracker.js';
import { verifyKeys } from '../src/verify/clickhouse.js';

let s: TestStores;
before(async () => {
  s = await openTestStores('benchverify');
});
after(async () => {
  await s.close();
});

async function insert(keys: string[], eventId = (k: string) => `ev_${k}`): Promise<void> {
  await s.clickhouse.insert({
    table: 'events',
    format: 'JSONEachRow',
    values: keys.map((k) => ({
      workspace_id: 'ws_verify',
      event_type: 'checkout.completed',
      idempotency_key: k,
      event_id: eventId(k),
      quantity: 1,
      gmv_cents: 100,
      currency: 'USD',
      occurred_at: '2026-01-01 00:00:00',
      received_at: '2026-01-01 00:00:00',
    })),
  });
}

test('every acknowledged key stored once: ok', async () => {
  const t = new KeyTracker('vok');
  for (let i = 0; i < 10; i++) t.ack(t.fresh());
  await insert(Array.from({ length: 10 }, (_, i) => t.key(i)));
  const v = await verifyKeys(s.clickhouse, 'events', t);
  assert.equal(v.ok, true);
  assert.equal(v.distinctInTable, 10);
  assert.equal(v.lost + v.doubled + v.stray, 0);
});

test('an acknowledged key missing from ClickHouse is reported lost', async () => {
  const t = new KeyTracker('vlost');
  for (let i = 0; i < 10; i++) t.ack(t.fresh());
  await insert(Array.from({ length: 9 }, (_, i) => t.key(i)));
  const v = await verifyKeys(s.clickhouse, 'events', t);
  assert.equal(v.ok, false);
  assert.equal(v.lost, 1);
});

test('a key stored under two event ids is doubled; a replayed copy of one event is not', async () => {
  const t = new KeyTracker('vdbl');
  for (let i = 0; i < 3; i++) t.ack(t.fresh());
  await insert([t.key(0), t.key(1), t.key(2)]);
  await insert([t.key(1)]); // same event id: a spool replay, collapsed by ReplacingMergeTree
  let v = await verifyKeys(s.clickhouse, 'events', t);
  assert.equal(v.ok, true);
  assert.equal(v.replayCopies, 1);
  await insert([t.key(2)], (k) => `ev_other_${k}`); // a second event for the same triple
  v = await verifyKeys(s.clickhouse, 'events', t);
  assert.equal(v.ok, false);
  assert.equal(v.doubled, 1);
});

test('a refused key found in ClickHouse is a stray; an unanswered one may be there or not', async () => {
  const t = new KeyTracker('vstray');
  const a = t.fresh();
  const refused = t.fresh();
  const unanswered = t.fresh();
  t.ack(a);
  t.refuse(refused);
  await insert([t.key(a), t.key(unanswered)]);
  let v = await verifyKeys(s.clickhouse, 'events', t);
  assert.equal(v.ok, true);
  assert.equal(v.unansweredStored, 1);
  await insert([t.key(refused)]);
  v = await verifyKeys(s.clickhouse, 'events', t);
  assert.equal(v.ok, false);
  assert.equal(v.stray, 1);
});

test('a loss and a stray of equal count do not cancel out', async () => {
  const t = new KeyTracker('vswap');
  const a = t.fresh();
  const b = t.fresh();
  t.ack(a);
  t.ack(b);
  const refused = t.fresh();
  t.refuse(refused);
  await insert([t.key(a), t.key(refused)]);
  const v = await verifyKeys(s.clickhouse, 'events', t);
  assert.equal(v.ok, false);
  assert.ok(v.lost >= 1 && v.stray >= 1);
});

test("with the run's occurred_at, only rows of that second are looked at (the time-first key prunes the rest)", async () => {
  const t = new KeyTracker('vat');
  for (let i = 0; i < 10; i++) t.ack(t.fresh());
  await insert(Array.from({ length: 10 }, (_, i) => t.key(i)));
  assert.equal((await verifyKeys(s.clickhouse, 'events', t, '2026-01-01T00:00:00.000Z')).ok, true);
  const other = await verifyKeys(s.clickhouse, 'events', t, '2026-01-01T00:00:01.000Z');
  assert.equal(other.lost, 10);
});
