import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { ROOT } from './support/services.js';

/**
 * The test run cannot hang silently: scripts/test.sh preloads scripts/test-watchdog.mjs into every
 * file. Here it runs on fixtures that hang, with short limits, and must fail them fast, by name.
 */
function runFixture(fixture: string): Promise<{ code: number | null; output: string; ms: number }> {
  const started = Date.now();
  // Inside a test file node sets NODE_TEST_CONTEXT, and a child `node --test` would then run nothing.
  const env: NodeJS.ProcessEnv = { ...process.env, METERD_TEST_TIMEOUT_MS: '1000', METERD_TEST_EXIT_GRACE_MS: '1000' };
  delete env.NODE_TEST_CONTEXT;
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        '--test',
        '--test-timeout=60000',
        '--import',
        `${ROOT}scripts/test-watchdog.mjs`,
        `${ROOT}test/fixtures/${fixture}`,
      ],
      {
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
    // The backstop if the watchdog itself were broken: this test then fails instead of hanging.
    const hard = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(hard);
      resolve({ code, output, ms: Date.now() - started });
    });
  });
}

test('a test that never finishes fails within its timeout and names itself', async () => {
  const r = await runFixture('hangs.fixture.mjs');
  assert.notEqual(r.code, 0, r.output);
  assert.match(
    r.output,
    /WATCHDOG: test "waits forever on a promise that never settles" in .*hangs\.fixture\.mjs did not finish within 1000 ms/,
  );
  assert.match(r.output, /^ok 1 - passes at once/m);
  assert.ok(r.ms < 20_000, `took ${r.ms} ms`);
});

test('a file whose tests passed but which stays alive fails and names what it left on the event loop', async () => {
  const r = await runFixture('leaves-timer.fixture.mjs');
  assert.notEqual(r.code, 0, r.output);
  assert.match(
    r.output,
    /WATCHDOG: .*leaves-timer\.fixture\.mjs finished its tests but did not exit within 1000 ms; still on its event loop: .*Timeout/,
  );
  assert.ok(r.ms < 20_000, `took ${r.ms} ms`);
});
