import { test } from 'node:test';
import assert from 'node:assert/strict';
import { stripeBillingProblem, type MeterDefinition } from '@meterd/core/meters';
import { meterGroupIdentifier } from '../src/identifier.js';
import { meterKeys } from '../src/planner.js';
import { NO_GROUP_VALUE } from '../src/meters.js';
import { payloadOf } from '../src/stripe/sender.js';
import type { PushRow } from '../src/ledger.js';

/** The identifiers and billed keys of user-defined meter pushes, and which meters Stripe can bill. */
const meter = (over: Partial<MeterDefinition> = {}): MeterDefinition => ({
  id: 'mtr_0123456789abcdefghijklmn',
  workspace_id: 'ws_0123456789abcdefghijklmn',
  slug: 'tokens',
  name: '',
  description: '',
  event_types: ['api.call'],
  aggregation: 'sum',
  value_field: 'properties.tokens',
  group_by: ['model', 'region'],
  stripe_event_name: 'llm.tokens',
  created_at_ms: 0,
  updated_at_ms: 0,
  backfill_state: 'done',
  ...over,
});

test('meter identifiers: deterministic, and distinct per meter, group, currency, window and revision', () => {
  const ws = 'ws_0123456789abcdefghijklmn';
  const base = meterGroupIdentifier(ws, 'mtr_a', '["gpt-4","eu"]', '', 1_700_000_000, 1);
  assert.equal(meterGroupIdentifier(ws, 'mtr_a', '["gpt-4","eu"]', '', 1_700_000_000, 1), base);
  const others = [
    meterGroupIdentifier(ws, 'mtr_b', '["gpt-4","eu"]', '', 1_700_000_000, 1),
    meterGroupIdentifier(ws, 'mtr_a', '["gpt-4","us"]', '', 1_700_000_000, 1),
    meterGroupIdentifier(ws, 'mtr_a', '["gpt-4","eu"]', 'EUR', 1_700_000_000, 1),
    meterGroupIdentifier(ws, 'mtr_a', '["gpt-4","eu"]', '', 1_700_003_600, 1),
    meterGroupIdentifier(ws, 'mtr_a', '["gpt-4","eu"]', '', 1_700_000_000, 2),
    // Group values that would collide if joined naively.
    meterGroupIdentifier(ws, 'mtr_a', '["gpt-4,eu"]', '', 1_700_000_000, 1),
  ];
  assert.equal(new Set([base, ...others]).size, 7);
  // Stripe caps identifiers at 100 characters, however long the ids and group values are.
  const long = meterGroupIdentifier(
    'ws_' + 'x'.repeat(60),
    'mtr_' + 'y'.repeat(60),
    JSON.stringify(['z'.repeat(256)]),
    'USD',
    1_700_000_000,
    12,
  );
  assert.ok(long.length <= 100, long);
  assert.notEqual(
    long,
    meterGroupIdentifier('ws_' + 'x'.repeat(60), 'mtr_' + 'y'.repeat(60), '["z"]', 'USD', 1_700_000_000, 12),
  );
});

test('meter keys: one per group and window, to the meter event_name (per currency over gmv_cents), with dimensions', () => {
  const m = meter();
  const keys = meterKeys([
    { meter: m, workspace_id: m.workspace_id, currency: '', window_start: 3600, group: ['gpt-4', 'eu'], total: 5n },
    { meter: m, workspace_id: m.workspace_id, currency: '', window_start: 3600, group: ['gpt-4', ''], total: 7n },
  ]);
  assert.deepEqual(
    keys.map((k) => [k.event_type, k.event_name, k.meter_id, k.group_key, k.dimensions, k.total, k.field]),
    [
      ['meter:tokens', 'llm.tokens', m.id, '["gpt-4","eu"]', { model: 'gpt-4', region: 'eu' }, 5n, 'meter'],
      ['meter:tokens', 'llm.tokens', m.id, '["gpt-4",""]', { model: 'gpt-4', region: NO_GROUP_VALUE }, 7n, 'meter'],
    ],
  );
  const gmv = meter({ value_field: 'gmv_cents', group_by: [] });
  const [k] = meterKeys([
    { meter: gmv, workspace_id: gmv.workspace_id, currency: 'EUR', window_start: 0, group: [], total: 1n },
  ]);
  assert.deepEqual([k!.event_name, k!.currency, k!.group_key, k!.dimensions], ['llm.tokens.eur', 'EUR', '[]', {}]);
});

test('payload: dimensions, then the customer and the value, which a dimension never overrides', () => {
  const row = { stripe_customer_id: 'cus_1', value: -3n, dimensions: { model: 'gpt-4' } } as unknown as PushRow;
  assert.deepEqual(payloadOf(row), { model: 'gpt-4', stripe_customer_id: 'cus_1', value: '-3' });
});

test('which meters Stripe can bill: sum and count; max, unique_count and latest refused; reserved group keys refused', () => {
  assert.equal(stripeBillingProblem(meter()), undefined);
  assert.equal(stripeBillingProblem(meter({ aggregation: 'count', value_field: null })), undefined);
  for (const aggregation of ['max', 'unique_count', 'latest'] as const)
    assert.equal(stripeBillingProblem(meter({ aggregation }))?.field, 'stripe_event_name', aggregation);
  assert.equal(stripeBillingProblem(meter({ group_by: ['value'] }))?.field, 'group_by');
  assert.equal(stripeBillingProblem(meter({ group_by: ['stripe_customer_id'] }))?.field, 'group_by');
});
