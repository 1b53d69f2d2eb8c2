import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openTestStores } from '@meterd/core/testing';
import { ROOT, waitFor } from './support/services.js';

/**
 * What `npm start` runs after the stack and migrations: the supervisor with every built service.
 * Each service it announces must answer GET /healthz; Ctrl-C (SIGINT) must stop them all.
 * It binds the fixed local ports (8080–8084, 12111), as `npm start` does.
 */
test('the supervisor starts every service, each answers /healthz, and Ctrl-C stops them all', { timeout: 90_000 }, async () => {
  const stores = await openTestStores('start');
  let out = '';
  const sup = spawn(process.execPath, [join(ROOT, 'core/dist/src/supervisor.js')], {
    env: { ...process.env, ...stores.env, SPOOL_DIR: mkdtempSync(join(tmpdir(), 'start-spool-')), LOG_LEVEL: 'warn', INGEST_THREADS: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  sup.stdout!.on('data', (c) => (out += c));
  sup.stderr!.on('data', (c) => (out += c));
  try {
    await waitFor('the supervisor to announce its services', async () => out.includes('Ctrl-C stops everything'), 20_000);
    const urls = [...out.matchAll(/^ {2}(\S+)\s+(http:\/\/127\.0\.0\.1:\d+)/gm)].map((m) => ({ name: m[1]!, url: m[2]! }));
    assert.deepEqual(urls.map((u) => u.name).sort(), ['aggregator', 'billing-sync', 'control-api', 'front', 'ingest', 'stripe-local']);
    for (const { name, url } of urls) {
      await waitFor(`${name} to answer ${url}/healthz`, () => fetch(`${url}/healthz`).then((r) => r.status === 200, () => false), 30_000);
    }
    const exited = new Promise<number | null>((r) => sup.once('exit', (code) => r(code)));
    sup.kill('SIGINT');
    assert.equal(await exited, 0, out.slice(-4_000));
    for (const { name, url } of urls) {
      assert.equal(await fetch(`${url}/healthz`).then(() => 'up', () => 'down'), 'down', `${name} still answers after Ctrl-C`);
    }
  } finally {
    if (sup.exitCode === null) sup.kill('SIGKILL');
    await stores.close();
  }
});
