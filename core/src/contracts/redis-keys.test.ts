import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  dashboardSessionKey,
  dedupeEpochMarker,
  dedupeKey,
  dedupeTierBase,
  quotaKey,
  rateLimitKey,
  dedupeRegistryKey,
} from './redis-keys.js';

// The layout is stored state: a running deployment's counters and claims live under these keys,
// so a change here loses them on upgrade. Changing a line below needs a migration of the keys.
test('Redis key layout', () => {
  assert.equal(quotaKey('md', 'ws_1', '202611'), 'md:{ws_1}:q:202611');
  assert.equal(dedupeKey('md', 'ws_1', 'checkout.completed:k1'), 'md:{ws_1}:d:checkout.completed:k1');
  assert.equal(rateLimitKey('md', 'signup', '10.0.0.1'), 'md:rl:signup:10.0.0.1');
  assert.equal(dashboardSessionKey('md', 'ab12'), 'md:dash:s:ab12');
  assert.equal(dedupeTierBase('md', 'ws_1'), 'md:{ws_1}:h:');
  assert.equal(dedupeEpochMarker('md', 'ws_1'), 'md:{ws_1}:e');
  assert.equal(dedupeRegistryKey('md'), 'md:{registry}:ws');
});
