import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { INGEST_MAIN } from './processes.js';

test('a bad setting exits at start with a message naming every bad variable', () => {
  const r = spawnSync(process.execPath, [INGEST_MAIN], {
    env: { ...process.env, REDIS_URL: 'localhost:6379', INGEST_PORT: 'eighty', SPOOL_FSYNC: 'sometimes' },
    encoding: 'utf8',
    timeout: 10_000,
  });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /REDIS_URL=\(hidden\) is invalid: protocol must be redis: or rediss:/);
  assert.match(r.stderr, /INGEST_PORT="eighty" is invalid: expected a whole number/);
  assert.match(r.stderr, /SPOOL_FSYNC="sometimes" is invalid: expected one of always, interval, never/);
  assert.doesNotMatch(r.stderr, /localhost:6379/, 'URLs may hold passwords: never echoed');
});
