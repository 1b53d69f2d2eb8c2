import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hashKey, isWellFormedKey, mintKey } from './api-key.js';

test('keys are sks_ + 256 random bits, stored as their SHA-256', () => {
  const a = mintKey();
  const b = mintKey();
  assert.match(a.token, /^sks_[A-Za-z0-9_-]{43}$/);
  assert.equal(Buffer.from(a.token.slice(4), 'base64url').length, 32);
  assert.notEqual(a.token, b.token);
  assert.ok(isWellFormedKey(a.token));
  assert.deepEqual(a.hash, hashKey(a.token));
  assert.equal(a.hash.length, 32);
  assert.equal(a.displayPrefix, a.token.slice(0, 12));
  assert.ok(!a.hash.toString('hex').includes(a.token.slice(4, 20)));
});

test('a key of the wrong length is not well-formed', () => {
  assert.ok(!isWellFormedKey('sks_short'));
});
