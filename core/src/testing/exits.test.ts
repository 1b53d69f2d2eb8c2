import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runUntilExit } from './exits.js';

test('a child that closes everything exits by itself with code 0', async () => {
  const r = await runUntilExit(
    `const t = setInterval(() => {}, 10); await new Promise((r) => setTimeout(r, 20)); clearInterval(t);`,
    {},
  );
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.leftover, undefined);
});

test('a child that leaves a timer armed after close is reported with what is left, not left hanging', async () => {
  const r = await runUntilExit(`setInterval(() => {}, 1_000);`, {}, 300);
  assert.equal(r.code, 99);
  assert.ok(r.leftover?.includes('Timeout'), r.stderr);
});
