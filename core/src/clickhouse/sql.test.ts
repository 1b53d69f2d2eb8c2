import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ident, lit, toClickHouseDateTime } from './sql.js';
import { clickHouseErrorCode } from './client.js';

test('lit quotes strings and escapes backslash, quote and NUL', () => {
  assert.equal(lit("o'clock"), "'o\\'clock'");
  assert.equal(lit('a\\b'), "'a\\\\b'");
  assert.equal(lit("x\\'; DROP TABLE events; --"), "'x\\\\\\'; DROP TABLE events; --'");
  assert.equal(lit('\0'), "'\\0'");
  assert.equal(lit(42), '42');
  assert.equal(lit(-7n), '-7');
  assert.throws(() => lit(NaN), TypeError);
});

test('ident accepts only plain identifiers', () => {
  assert.equal(ident('events_2026'), 'events_2026');
  for (const bad of ['', '1abc', 'a-b', 'a b', 'a;b', '`x`', 'x'.repeat(129)])
    assert.throws(() => ident(bad), TypeError, bad);
});

test('DateTime text is UTC, second precision', () => {
  assert.equal(toClickHouseDateTime(Date.UTC(2026, 0, 2, 3, 4, 5, 678)), '2026-01-02 03:04:05');
});

test('server error codes are read from 18.16 text and from current clients', () => {
  assert.equal(clickHouseErrorCode(new Error("Code: 60, e.displayText() = DB::Exception: Table x doesn't exist")), 60);
  assert.equal(clickHouseErrorCode({ code: '81', message: "Database x doesn't exist" }), 81);
  assert.equal(clickHouseErrorCode(new Error('socket hang up')), undefined);
});
