import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '@meterd/core/config';
import { loadControlConfig } from '../src/config.js';

const dev = { NODE_ENV: 'development' };

test('the Redis key prefix is REDIS_KEY_PREFIX, as in ingest; the old name is refused, not ignored', () => {
  assert.equal(loadControlConfig(dev).REDIS_KEY_PREFIX, 'md');
  assert.equal(loadControlConfig({ ...dev, REDIS_KEY_PREFIX: 'tenant7' }).REDIS_KEY_PREFIX, 'tenant7');
  assert.throws(
    () => loadControlConfig({ ...dev, INGEST_REDIS_PREFIX: 'tenant7' }),
    (err: unknown) =>
      err instanceof ConfigError && /INGEST_REDIS_PREFIX was renamed REDIS_KEY_PREFIX/.test(err.message),
  );
});
