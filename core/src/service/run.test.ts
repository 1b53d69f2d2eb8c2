import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';

/** Runs an entry point built on runService in a child; `signal` is sent once it prints "started". */
function run(
  body: string,
  env: Record<string, string>,
  signal?: NodeJS.Signals,
): Promise<{ code: number | null; out: string }> {
  const url = new URL('./index.js', import.meta.url).href;
  const script = `const { runService } = await import(${JSON.stringify(url)});\n${body}`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const seen = (c: Buffer): void => {
    out += c.toString();
    if (signal !== undefined && out.includes('started')) {
      child.kill(signal);
      signal = undefined;
    }
  };
  child.stdout.on('data', seen);
  child.stderr.on('data', seen);
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, out })));
}

// A spec whose config needs PORT (an integer); its close() reports whether readiness was already off.
const spec = (close: string, drainMs = 10_000): string => `
  const { loadConfig, int, oneOf } = await import(${JSON.stringify(new URL('../config/index.js', import.meta.url).href)});
  await runService({
    name: 'demo',
    drainMs: ${drainMs},
    loadConfig: (env) => loadConfig({ PORT: int('port', 1, 1, 65535), LOG_LEVEL: oneOf('level', 'silent', ['silent', 'info']) }, env),
    start: async (cfg, ctx) => {
      const keepAlive = setInterval(() => {}, 1000);
      console.log('started');
      return { close: async () => { ${close}; clearInterval(keepAlive); } };
    },
  });`;

test('a bad setting is named on stderr and the process exits 1 before start', async () => {
  const r = await run(spec(''), { PORT: 'eighty' });
  assert.equal(r.code, 1);
  assert.match(r.out, /^demo: invalid configuration:\n\s+PORT/m);
  assert.doesNotMatch(r.out, /started/);
});

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`${signal}: readiness is off before close() runs, then the process exits 0`, async () => {
    const r = await run(
      spec(`console.log('closing, draining=' + String(ctx.draining.aborted))`),
      { PORT: '1' },
      signal,
    );
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /closing, draining=true/);
  });
}

test('a close() that never finishes is cut off at the drain deadline', async () => {
  const r = await run(spec('await new Promise(() => {})', 300), { PORT: '1', LOG_LEVEL: 'info' }, 'SIGTERM');
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /did not close in time/);
});

/** A spec that reads SHUTDOWN_DELAY_MS and prints when readiness went off and when close() ran. */
const delayed = `
  const { loadConfig, int, oneOf } = await import(${JSON.stringify(new URL('../config/index.js', import.meta.url).href)});
  await runService({
    name: 'demo',
    loadConfig: (env) => loadConfig({ SHUTDOWN_DELAY_MS: int('delay', 0, 0, 120000), LOG_LEVEL: oneOf('level', 'silent', ['silent', 'info']) }, env),
    start: async (cfg, ctx) => {
      const keepAlive = setInterval(() => {}, 1000);
      ctx.draining.addEventListener('abort', () => console.log('draining at ' + Date.now()));
      console.log('started');
      return { close: async () => { console.log('closing at ' + Date.now()); clearInterval(keepAlive); } };
    },
  });`;

test('SHUTDOWN_DELAY_MS: readiness goes off at the signal, close() runs only after the delay', async () => {
  const r = await run(delayed, { SHUTDOWN_DELAY_MS: '400' }, 'SIGTERM');
  assert.equal(r.code, 0, r.out);
  const at = (what: string) => Number(new RegExp(`${what} at (\\d+)`).exec(r.out)?.[1]);
  assert.ok(at('closing') - at('draining') >= 395, r.out);
});

test('SHUTDOWN_DELAY_MS: a second signal skips the rest of the delay', { timeout: 30_000 }, async () => {
  const script = delayed.replace(
    "console.log('started');",
    "console.log('started'); ctx.draining.addEventListener('abort', () => process.kill(process.pid, 'SIGTERM'));",
  );
  // A 2-minute delay: only the second signal can end this run within the test's timeout.
  const r = await run(script, { SHUTDOWN_DELAY_MS: '120000' }, 'SIGTERM');
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /closing at/);
});
