import { test } from 'node:test';
import assert from 'node:assert/strict';
import { byteCompare } from './partials.js';

test('byteCompare orders strings as ClickHouse does (UTF-8 bytes), past U+FFFF and around U+E000–U+FFFF too', () => {
  // Code units from each range where UTF-16 and UTF-8 orders agree or differ.
  const pool = ['a', 'z', '\n', 'é', '\u07ff', '\u0800', '\ud7ff', '\ue000', '\uffff', '😀', '𝄞', '\u{10ffff}'];
  let seed = 7;
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
  const word = () => Array.from({ length: rand(4) }, () => pool[rand(pool.length)]).join('');
  const sign = (x: number) => (x > 0 ? 1 : x < 0 ? -1 : 0);
  for (let i = 0; i < 20_000; i++) {
    const a = word();
    const b = rand(4) === 0 ? a : word();
    const want = sign(Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')));
    assert.equal(sign(byteCompare(a, b)), want, `${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
  }
  assert.ok(byteCompare('😀', '\uffff') > 0, 'past U+FFFF is greater in UTF-8, though its surrogate is less in UTF-16');
});
