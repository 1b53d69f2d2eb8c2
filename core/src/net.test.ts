import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addressMatcher } from './net.js';

test('addressMatcher: exact addresses, CIDR blocks of both families, IPv4-mapped IPv6, nothing else', () => {
  const trusted = addressMatcher(['127.0.0.1', '10.0.0.0/8', 'fd00::/8']);
  for (const a of ['127.0.0.1', '10.1.2.3', '::ffff:10.9.9.9', 'fd12::1']) assert.equal(trusted(a), true, a);
  for (const a of ['127.0.0.2', '11.0.0.1', 'fe80::1', '', 'proxy.internal']) assert.equal(trusted(a), false, a);
  assert.equal(addressMatcher([])('127.0.0.1'), false);
});
