import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { hashKey, isWellFormedKey, keyEnvironment, mintKey } from './api-key.js';

test('keys are sks_<environment>_ + 256 random bits, stored as their SHA-256', () => {
  const a = mintKey();
  const b = mintKey();
  assert.match(a.token, /^sks_live_[A-Za-z0-9_-]{43}$/);
  assert.equal(Buffer.from(a.token.slice(9), 'base64url').length, 32);
  assert.notEqual(a.token, b.token);
  assert.ok(isWellFormedKey(a.token));
  assert.deepEqual(a.hash, hashKey(a.token));
  assert.equal(a.hash.length, 32);
  assert.equal(a.displayPrefix, a.token.slice(0, 17));
  assert.ok(!a.hash.toString('hex').includes(a.token.slice(9, 25)));
});

test('a test key says so in its prefix; a legacy sks_ key still parses, as live', () => {
  const t = mintKey('test');
  assert.match(t.token, /^sks_test_[A-Za-z0-9_-]{43}$/);
  assert.ok(isWellFormedKey(t.token));
  assert.equal(keyEnvironment(t.token), 'test');
  assert.equal(keyEnvironment(mintKey('live').token), 'live');
  const legacy = 'sks_' + randomBytes(32).toString('base64url');
  assert.ok(isWellFormedKey(legacy));
  assert.equal(keyEnvironment(legacy), 'live');
  // A legacy key whose random part happens to begin with "test_" is still live (its length says so).
  assert.equal(keyEnvironment('sks_test_' + 'A'.repeat(38)), 'live');
});

test('a key of the wrong length or an unknown environment is not well-formed', () => {
  assert.ok(!isWellFormedKey('sks_short'));
  assert.ok(!isWellFormedKey('sks_prod_' + 'A'.repeat(43)));
  assert.ok(!isWellFormedKey('sks_live_' + 'A'.repeat(42)));
});
