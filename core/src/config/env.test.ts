import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig, ConfigError, int, url, oneOf, str, hostPortList } from './env.js';

const spec = {
  REDIS_URL: url('Redis', 'redis://127.0.0.1:6379', ['redis:'], true),
  PORT: int('port', 8080, 0, 65535),
  MODE: oneOf('mode', 'a', ['a', 'b'] as const),
  NAME: str('required name'),
};

test('defaults apply and the result is frozen', () => {
  const c = loadConfig(spec, { NAME: 'x' });
  assert.equal(c.PORT, 8080);
  assert.equal(c.REDIS_URL.port, '6379');
  assert.ok(Object.isFrozen(c));
});

test('every problem is reported together, naming the variable; secrets are not echoed', () => {
  const err = (() => {
    try {
      loadConfig(spec, { REDIS_URL: 'not a url with secret', PORT: '99999', MODE: 'c' });
    } catch (e) {
      return e as ConfigError;
    }
    assert.fail('expected a ConfigError');
  })();
  assert.ok(err instanceof ConfigError);
  assert.equal(err.code, 'METERD_CONFIG_INVALID');
  assert.equal(err.problems.length, 4);
  assert.match(err.message, /REDIS_URL=\(hidden\) is invalid: not a URL/);
  assert.doesNotMatch(err.message, /with secret/);
  assert.match(err.message, /PORT="99999" is invalid: expected a number from 0 to 65535/);
  assert.match(err.message, /MODE="c" is invalid: expected one of a, b/);
  assert.match(err.message, /NAME is required/);
});

test('a URL with the wrong protocol is refused', () => {
  assert.throws(
    () => loadConfig(spec, { NAME: 'x', REDIS_URL: 'http://127.0.0.1:6379' }),
    /REDIS_URL=\(hidden\) is invalid: protocol must be redis:/,
  );
});

test('host:port lists: names, IPv4 and bracketed IPv6; anything else is refused naming the item', () => {
  const nodes = { NODES: hostPortList('seeds') };
  assert.deepEqual(loadConfig(nodes, {}).NODES, []);
  assert.deepEqual(loadConfig(nodes, { NODES: 'redis-0.redis:6379, 10.0.0.5:7000,[::1]:7001' }).NODES, [
    { host: 'redis-0.redis', port: 6379 },
    { host: '10.0.0.5', port: 7000 },
    { host: '::1', port: 7001 },
  ]);
  for (const bad of ['redis-0', 'redis://h:1', 'h:0', 'h:65536', '::1:7000', 'user@h:1'])
    assert.throws(
      () => loadConfig(nodes, { NODES: `h:1,${bad}` }),
      (e: ConfigError) => e.problems[0]!.includes(JSON.stringify(bad)),
      bad,
    );
});
