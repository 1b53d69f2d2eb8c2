import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));

test('the README opens with exactly the two set-up commands', () => {
  const readme = readFileSync(root + 'README.md', 'utf8');
  const firstBlock = /```sh\n([\s\S]*?)```/.exec(readme);
  assert.ok(firstBlock);
  assert.deepEqual(firstBlock[1]!.trim().split('\n'), ['npm start', 'npm test']);
});

test('the README documents every configuration variable with its real default', () => {
  const r = spawnSync(process.execPath, [root + 'scripts/config-doc.mjs', '--check'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
});
