import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { connect } from 'node:net';
import { freePort } from '@meterd/core/net';
import { ROOT } from './support/services.js';

/**
 * The stack scripts: up.sh starts what does not answer and records it, a second run changes
 * nothing, down.sh stops only what up.sh started. Run on a copy of the scripts (their folder, and so
 * their `.stack/`, is where they live) on free ports, so the shared stores are never touched.
 */
const answers = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = connect({ host: '127.0.0.1', port }, () => {
      s.end();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });

test(
  'up.sh starts what is missing, twice is a no-op, down.sh stops only what it started',
  {
    timeout: 180_000,
    skip: process.getuid?.() === 0 ? false : 'starts Postgres as the postgres user: needs root',
  },
  async () => {
    const repo = mkdtempSync(join(tmpdir(), 'stack-'));
    mkdirSync(join(repo, 'infra/stack'), { recursive: true });
    for (const f of ['up.sh', 'down.sh', 'lib.sh', 'clickhouse-config.sh'])
      copyFileSync(join(ROOT, 'infra/stack', f), join(repo, 'infra/stack', f));
    const env = {
      ...process.env,
      REDIS_PORT: String(await freePort()),
      PGPORT: String(await freePort()),
      CLICKHOUSE_HTTP_PORT: String(await freePort()),
      CLICKHOUSE_TCP_PORT: String(await freePort()),
    };
    const run = (script: string) =>
      spawnSync('bash', [join(repo, 'infra/stack', script)], {
        env,
        encoding: 'utf8',
        timeout: 150_000,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    const ports = [env.REDIS_PORT, env.PGPORT, env.CLICKHOUSE_HTTP_PORT].map(Number);
    try {
      const first = run('up.sh');
      assert.equal(first.status, 0, first.stderr);
      assert.equal((first.stdout.match(/started by meterd/g) ?? []).length, 3, first.stdout);
      for (const p of ports) assert.ok(await answers(p), `port ${p} answers after up.sh`);
      // Its own Redis keeps dedupe keys and counters across a restart and never evicts them.
      const redisConfig = (key: string) =>
        spawnSync('redis-cli', ['-p', env.REDIS_PORT, 'config', 'get', key], { encoding: 'utf8' }).stdout.split(
          '\n',
        )[1];
      assert.equal(redisConfig('appendonly'), 'yes');
      assert.equal(redisConfig('appendfsync'), 'everysec');
      assert.equal(redisConfig('maxmemory-policy'), 'noeviction');

      const t0 = Date.now();
      const second = run('up.sh');
      assert.equal(second.status, 0, second.stderr);
      assert.ok(Date.now() - t0 < 10_000, 'a second run only checks');
      assert.equal((second.stdout.match(/started by meterd/g) ?? []).length, 3, 'it still reports them as its own');

      const down = run('down.sh');
      assert.equal(down.status, 0, down.stderr);
      for (const p of ports) assert.equal(await answers(p), false, `port ${p} is closed after down.sh`);
      // The shared stores the rest of the suite uses were not started by this copy: untouched.
      for (const p of [6379, 5432, 8123]) assert.ok(await answers(p), `shared port ${p} still answers`);
      assert.equal(run('down.sh').status, 0, 'down.sh twice is harmless');
    } finally {
      run('down.sh');
      // Postgres's data may sit outside the copy (a folder the postgres user can reach): remove both.
      const location = join(repo, '.stack/postgres/location');
      const home = existsSync(location) ? /^PG_HOME=(\S+)$/m.exec(readFileSync(location, 'utf8'))?.[1] : undefined;
      if (home !== undefined && home.startsWith('/var/tmp/meterd-stack-'))
        rmSync(dirname(home), { recursive: true, force: true });
      rmSync(repo, { recursive: true, force: true });
    }
  },
);
