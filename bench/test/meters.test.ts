import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from '../src/args.js';
import { metersVerdict, type MetersComparison, type MetersRun } from '../src/meters-compare.js';
import { BENCH_METER_SPECS, benchProperties } from '../src/stack/meters.js';
import { firstDifference } from '../src/verify/meters.js';

const CLI = new URL('../src/cli.js', import.meta.url).pathname;

function run(
  side: MetersRun['side'],
  round: number,
  eventsPerSec: number,
  rollupP99Ms: number,
  more: Partial<MetersRun> = {},
): MetersRun {
  return {
    side,
    round,
    eventsPerSec,
    eventsP99Ms: rollupP99Ms - 200,
    rollupP99Ms,
    aggregatorCycleMedianMs: 100,
    generatorBound: [],
    mergeWaitMs: 0,
    loadavg1m: 1,
    ...(side === 'meters' ? { metersExact: true } : {}),
    correct: true,
    ...more,
  };
}

const pass = (v: ReturnType<typeof metersVerdict>) => v.targets.map((t) => t.pass);

test('--meters N and --against-no-meters: bounds, batch only, self-started only, no ceilings', () => {
  const a = parseArgs(['--meters', '10', '--against-no-meters'], {}, '/r');
  assert.ok(a !== 'help');
  assert.equal(a.meters, 10);
  assert.deepEqual(a.scenarios, ['batch']);
  assert.equal(a.compare, false);
  assert.throws(() => parseArgs(['--against-no-meters'], {}, '/r'), /needs --meters/);
  assert.throws(() => parseArgs(['--meters', '3', '--against-no-meters', '--scenario', 'single'], {}, '/r'), /batch/);
  assert.throws(() => parseArgs(['--meters', '51'], {}, '/r'), /--meters expects a whole number from 1 to 50/);
  assert.throws(
    () => parseArgs(['--meters', '2', '--target', 'http://h:1', '--key', 'k', '--workspace', 'w'], {}, '/r'),
    /self-started/,
  );
});

test('the verdict: ratio of medians (no meters ÷ meters) ≤ 1.2 and the meters side rollup p99 ≤ 2 s, both needed', () => {
  // Medians: none 10,000 and 9,000 events/s → 9,500; meters 8,400 and 8,000 → 8,200: 1.16.
  const ok = metersVerdict(
    [
      run('none', 1, 10_000, 1_500),
      run('meters', 1, 8_400, 1_700),
      run('meters', 2, 8_000, 1_900),
      run('none', 2, 9_000, 1_400),
    ],
    10,
  );
  assert.equal(ok.ratios.throughput, 1.16);
  assert.deepEqual(ok.medians.meters, { eventsPerSec: 8_200, eventsP99Ms: 1_600, rollupP99Ms: 1_800 });
  assert.deepEqual(pass(ok), [true, true, undefined, true, true]);
  assert.equal(ok.ok, true);
  assert.match(ok.targets[0]!.name, /no meters ÷ 10 meters/);

  const slow = metersVerdict([run('none', 1, 10_000, 1_500), run('meters', 1, 8_000, 1_500)], 10);
  assert.equal(slow.ratios.throughput, 1.25);
  assert.deepEqual(pass(slow).slice(0, 2), [false, true]);
  assert.equal(slow.ok, false);

  const stale = metersVerdict([run('none', 1, 10_000, 2_500), run('meters', 1, 9_900, 2_001)], 10);
  assert.deepEqual(pass(stale).slice(0, 3), [true, false, undefined], 'the no-meter side is the reference, not judged');
  assert.equal(stale.ok, false);

  // A generator-bound run measures the generator: the ratio is shown, not judged, and no pass.
  const bound = metersVerdict(
    [run('none', 1, 10_000, 1_000, { generatorBound: ['meterd (95 % of 200 %)'] }), run('meters', 1, 9_900, 1_000)],
    10,
  );
  assert.equal(bound.targets[0]!.pass, undefined);
  assert.match(bound.targets[0]!.measured, /generator-bound: none round 1/);
  assert.equal(bound.ok, false);

  // Fast and wrong is no pass.
  const inexact = metersVerdict(
    [run('none', 1, 10_000, 1_000), run('meters', 1, 9_900, 1_000, { metersExact: false })],
    10,
  );
  assert.deepEqual(pass(inexact), [true, true, undefined, false, true]);
  assert.equal(inexact.ok, false);
  const lost = metersVerdict([run('none', 1, 10_000, 1_000, { correct: false }), run('meters', 1, 9_900, 1_000)], 10);
  assert.equal(lost.targets[4]!.pass, false);
  assert.equal(lost.ok, false);

  // Nothing measured on a side: fails, never passes by default.
  const missing = metersVerdict([run('none', 1, 10_000, 1_000)], 10);
  assert.equal(missing.ratios.throughput, undefined);
  assert.deepEqual(pass(missing).slice(0, 2), [false, false]);
  assert.equal(missing.ok, false);
});

test('meter verification compares sorted rows and names the first difference, a missing row included', () => {
  assert.equal(firstDifference(['b → 2', 'a → 1'], ['a → 1', 'b → 2']), undefined);
  assert.deepEqual(firstDifference(['a → 1', 'b → 3'], ['a → 1', 'b → 2']), { rollup: 'b → 3', events: 'b → 2' });
  assert.deepEqual(firstDifference(['a → 1'], ['a → 1', 'b → 2']), { rollup: undefined, events: 'b → 2' });
});

test('the bench meters cover every aggregation, with and without group-by, over properties the events carry', () => {
  assert.equal(BENCH_METER_SPECS.length, 10);
  assert.deepEqual(
    new Set(BENCH_METER_SPECS.map((s) => s.aggregation)),
    new Set(['sum', 'count', 'max', 'unique_count', 'latest']),
  );
  assert.ok(
    BENCH_METER_SPECS.some((s) => s.group_by.length === 0) && BENCH_METER_SPECS.some((s) => s.group_by.length === 3),
  );
  const props = (JSON.parse(`{${benchProperties(12_345)}}`) as { properties: Record<string, string> }).properties;
  for (const s of BENCH_METER_SPECS) {
    for (const k of s.group_by) assert.ok(props[k] !== undefined, `${s.slug}: group_by ${k} is sent`);
    if (s.value_field?.startsWith('properties.')) assert.ok(props[s.value_field.slice(11)] !== undefined, s.slug);
  }
  assert.match(props.tokens!, /^[1-9][0-9]*$/, 'numeric meters get integers');
});

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

test(
  '--meters 3 --against-no-meters at a tiny scale: both sides run, the meters are exact, the report has its ratio and verdict',
  { timeout: 300_000 },
  async () => {
    const out = mkdtempSync(join(tmpdir(), 'meterd-bench-meters-'));
    try {
      const r = await runCli([
        '--meters',
        '3',
        '--against-no-meters',
        '--duration',
        '2s',
        '--connections',
        '2',
        '--rounds',
        '1',
        '--out',
        out,
      ]);
      assert.equal(r.code, 0, `bench failed:\n${r.stderr.slice(-3_000)}`);
      const json = readdirSync(out).find((f) => f.endsWith('-meters.json'));
      assert.ok(json, 'a JSON result file is written');
      assert.ok(readdirSync(out).some((f) => f.endsWith('-meters.md')));
      const c = JSON.parse(readFileSync(join(out, json), 'utf8')) as MetersComparison;
      assert.equal(c.correct, true);
      assert.deepEqual(
        c.meters.map((m) => m.slug),
        BENCH_METER_SPECS.slice(0, 3).map((s) => s.slug),
      );
      assert.deepEqual(
        c.runs.map((x) => [x.round, x.side]),
        [
          [1, 'none'],
          [1, 'meters'],
        ],
      );
      for (const x of c.runs) {
        assert.ok((x.eventsPerSec ?? 0) > 0, `${x.side}: events were sent`);
        assert.ok(x.rollupP99Ms !== undefined, `${x.side}: rollup freshness was measured`);
      }
      assert.equal(c.runs[1]!.metersExact, true, "the meters' rollups equal the raw events");
      assert.equal(c.runs[0]!.metersExact, undefined, 'no meters, nothing to check');
      assert.equal(typeof c.ratios.throughput, 'number');
      // The verdict is the one metersVerdict gives these runs (checked on its own above).
      const v = metersVerdict(c.runs, 3);
      assert.deepEqual(c.targets, JSON.parse(JSON.stringify(v.targets)), 'as written to JSON (undefined dropped)');
      assert.equal(c.ok, v.ok);
      assert.match(r.stdout, /no meters ÷ 3 meters/);
      assert.match(r.stdout, /Verdict: (✅|❌)/);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  },
);
