import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readMigrations, splitStatements } from './files.js';

test('statements split on semicolons that end a line; comment-only chunks vanish', () => {
  assert.deepEqual(splitStatements("-- a comment\nCREATE TABLE a (x String);\n\nSELECT ';' AS s;\n-- trailing\n"), [
    'CREATE TABLE a (x String)',
    "SELECT ';' AS s",
  ]);
});

test('migrations must be numbered without gaps', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mig-'));
  writeFileSync(join(dir, '001_a.sql'), 'SELECT 1');
  writeFileSync(join(dir, '003_c.sql'), 'SELECT 1');
  await assert.rejects(readMigrations(dir), /breaks the sequence/);
  writeFileSync(join(dir, '002_b.sql'), 'SELECT 1');
  assert.deepEqual(
    (await readMigrations(dir)).map((m) => m.name),
    ['001_a.sql', '002_b.sql', '003_c.sql'],
  );
  writeFileSync(join(dir, '004-bad.sql'), 'SELECT 1');
  await assert.rejects(readMigrations(dir), /is not named NNN_name.sql/);
});
