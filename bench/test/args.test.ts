import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connectionsFor, parseArgs, parseDuration } from '../src/args.js';

test('durations: seconds, minutes, bare numbers; nonsense refused', () => {
  assert.equal(parseDuration('30s'), 30);
  assert.equal(parseDuration('2m'), 120);
  assert.equal(parseDuration('45'), 45);
  assert.throws(() => parseDuration('soon'), /--duration/);
  assert.throws(() => parseDuration('0s'), /between/);
});

test('--quick runs single, batch and duplicates briefly and without comparisons', () => {
  const a = parseArgs(['--quick'], {}, '/tmp/r');
  assert.ok(a !== 'help');
  assert.deepEqual(a.scenarios, ['single', 'batch', 'duplicates']);
  assert.equal(a.compare, false);
  assert.ok(a.durationSec <= 5);
});

test('--target needs a key and a workspace, and refuses scenarios that create workspaces', () => {
  assert.throws(() => parseArgs(['--target', 'http://h:1'], {}, '/r'), /--key/);
  assert.throws(() => parseArgs(['--target', 'http://h:1', '--key', 'k'], {}, '/r'), /--workspace/);
  assert.throws(
    () => parseArgs(['--target', 'http://h:1', '--key', 'k', '--workspace', 'ws_a', '--scenario', 'quota'], {}, '/r'),
    /self-started/,
  );
  const a = parseArgs(['--target', 'http://h:1/', '--workspace', 'ws_a'], { BENCH_API_KEY: 'sks_env' }, '/r');
  assert.ok(a !== 'help');
  assert.equal(a.key, 'sks_env');
  assert.equal(a.target, 'http://h:1');
});

test('unknown options and scenarios are named in the error', () => {
  assert.throws(() => parseArgs(['--scenraio', 'x'], {}, '/r'), /unknown option "--scenraio"/);
  assert.throws(() => parseArgs(['--scenario', 'huge'], {}, '/r'), /must be one of/);
  assert.throws(() => parseArgs(['--ingest-env', 'lower=1'], {}, '/r'), /NAME=value/);
});

test('connections default per scenario unless given', () => {
  const a = parseArgs([], {}, '/r');
  assert.ok(a !== 'help');
  assert.equal(connectionsFor(a, 'batch'), 16);
  assert.equal(connectionsFor(a, 'single'), 100);
  const b = parseArgs(['--connections', '7'], {}, '/r');
  assert.ok(b !== 'help');
  assert.equal(connectionsFor(b, 'batch'), 7);
});

test('--compare-ref takes a git ref, skips the side-by-side ceilings, and refuses --target', () => {
  const a = parseArgs(['--scenario', 'batch', '--compare-ref', 'main'], {}, '/tmp/out');
  assert.ok(a !== 'help');
  assert.equal(a.compareRef, 'main');
  assert.equal(a.compare, false);
  assert.throws(() => parseArgs(['--compare-ref', '--evil'], {}, '/tmp/out'), /is not a git ref/);
  assert.throws(
    () =>
      parseArgs(
        ['--compare-ref', 'main', '--target', 'http://x:1', '--key', 'k', '--workspace', 'ws_a'],
        {},
        '/tmp/out',
      ),
    /cannot be combined with --target/,
  );
  const m = parseArgs(['--ingest-main', '/opt/other/ingest/dist/src/main.js'], {}, '/tmp/out');
  assert.ok(m !== 'help');
  assert.equal(m.ingestMain, '/opt/other/ingest/dist/src/main.js');
});

test('--against-empty needs --preload and the self-started stack; rounds and rate default to 2 and 5000', () => {
  assert.throws(() => parseArgs(['--against-empty'], {}, '/r'), /--preload/);
  assert.throws(
    () =>
      parseArgs(
        ['--against-empty', '--preload', '10', '--target', 'http://h:1', '--key', 'k', '--workspace', 'ws_a'],
        {},
        '/r',
      ),
    /self-started/,
  );
  const a = parseArgs(['--preload', '50000000', '--against-empty'], {}, '/r');
  assert.ok(a !== 'help');
  assert.deepEqual([a.againstEmpty, a.preload, a.rounds, a.rate], [true, 50_000_000, 2, 5_000]);
  const b = parseArgs(['--preload', '5', '--against-empty', '--rounds', '3', '--rate', '2000'], {}, '/r');
  assert.ok(b !== 'help');
  assert.deepEqual([b.rounds, b.rate], [3, 2_000]);
});

test('--generator: wrk by default when installed, autocannon otherwise; wrk asked for but missing is refused', () => {
  const installed = parseArgs([], {}, '/r', true);
  assert.ok(installed !== 'help');
  assert.equal(installed.generator, 'wrk');
  const missing = parseArgs([], {}, '/r', false);
  assert.ok(missing !== 'help');
  assert.equal(missing.generator, 'autocannon');
  const chosen = parseArgs(['--generator', 'autocannon'], {}, '/r', true);
  assert.ok(chosen !== 'help');
  assert.equal(chosen.generator, 'autocannon');
  assert.throws(() => parseArgs(['--generator', 'wrk'], {}, '/r', false), /apt-get install wrk/);
  assert.throws(() => parseArgs(['--generator', 'ab'], {}, '/r', true), /one of wrk, autocannon/);
});

test('--stages runs for single or batch on the self-started stack only', () => {
  const a = parseArgs(['--scenario', 'batch', '--stages'], {}, '/r');
  assert.ok(a !== 'help');
  assert.equal(a.stages, true);
  assert.throws(() => parseArgs(['--scenario', 'mixed', '--stages'], {}, '/r'), /--stages/);
  assert.throws(
    () => parseArgs(['--stages', '--target', 'http://h:1', '--key', 'k', '--workspace', 'ws_a'], {}, '/r'),
    /--stages/,
  );
});
