import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bucketOf } from './client-address.js';

test('client buckets: IPv4 as is, IPv4-mapped IPv6 as IPv4, IPv6 by its /64, however it is written', () => {
  assert.equal(bucketOf('203.0.113.9'), '203.0.113.9');
  assert.equal(bucketOf('::ffff:203.0.113.9'), '203.0.113.9');
  assert.equal(bucketOf('0000:0000:0000:0000:0000:ffff:cb00:7109'), '203.0.113.9');
  assert.equal(bucketOf('2001:db8:1:2:aaaa:bbbb:cccc:dddd'), '2001:db8:1:2::/64');
  assert.equal(bucketOf('2001:0db8:0001:0002:0000:0000:0000:0001'), '2001:db8:1:2::/64');
  assert.equal(bucketOf('2001:db8:1:2::9'), '2001:db8:1:2::/64');
  assert.equal(bucketOf('::1'), '0:0:0:0::/64');
});
