import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BenchReport } from '../src/run.js';
import { freePort } from '../src/children/child.js';

const CLI = new URL('../src/cli.js', import.meta.url).pathname;

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
  'bench:quick — single, batch and duplicates under load: every acknowledged event in ClickHouse exactly once',
  { timeout: 180_000 },
  async () => {
    const out = mkdtempSync(join(tmpdir(), 'meterd-bench-quick-'));
    try {
      const r = await runCli(['--quick', '--out', out]);
      assert.equal(r.code, 0, `bench --quick failed:\n${r.stderr.slice(-3_000)}`);
      const json = readdirSync(out).find((f) => f.endsWith('.json'));
      assert.ok(json, 'a JSON result file is written');
      assert.ok(
        readdirSync(out).some((f) => f.endsWith('.md')) && readdirSync(out).some((f) => f.endsWith('.svg')),
        'Markdown and SVG are written',
      );
      const report = JSON.parse(readFileSync(join(out, json), 'utf8')) as BenchReport;
      assert.equal(report.correct, true);
      assert.deepEqual(
        report.phases.map((p) => p.scenario),
        ['single', 'batch', 'duplicates'],
      );
      for (const p of report.phases) {
        const v = p.verification!;
        assert.ok(v.acknowledged > 0, `${p.scenario}: the load was acknowledged`);
        assert.equal(v.lost, 0, `${p.scenario}: nothing lost`);
        assert.equal(v.doubled, 0, `${p.scenario}: nothing doubled`);
        assert.equal(v.stray, 0, `${p.scenario}: nothing stored against a refusal`);
        assert.equal(v.rowsFinal, v.distinctInTable);
        assert.ok(v.distinctInTable >= v.acknowledged);
        assert.ok(p.probeVerification!.ok);
        assert.ok(p.freshness!.probesSeen > 0, `${p.scenario}: freshness was measured`);
        assert.ok(p.meterd.series.length >= 2, `${p.scenario}: a per-second series`);
      }
      const dup = report.phases.find((p) => p.scenario === 'duplicates')!;
      assert.ok(dup.answers.duplicate > 0, 'retries were answered as duplicates');
      const batch = report.phases.find((p) => p.scenario === 'batch')!;
      assert.ok(batch.verification!.acknowledged >= 100 * batch.meterd.requests - 100 * batch.meterd.connections);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  },
);

test(
  'the autocannon generator (where wrk is missing) verifies the same way: batch, nothing lost or doubled',
  { timeout: 120_000 },
  async () => {
    const out = mkdtempSync(join(tmpdir(), 'meterd-bench-autocannon-'));
    try {
      const r = await runCli(['--quick', '--scenario', 'batch', '--generator', 'autocannon', '--out', out]);
      assert.equal(r.code, 0, `bench --quick --generator autocannon failed:\n${r.stderr.slice(-3_000)}`);
      const json = readdirSync(out).find((f) => f.endsWith('.json'))!;
      const report = JSON.parse(readFileSync(join(out, json), 'utf8')) as BenchReport;
      const p = report.phases[0]!;
      assert.equal(p.meterd.generator.tool, 'autocannon');
      assert.ok(p.verification!.acknowledged > 0);
      assert.equal(p.verification!.ok, true);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  },
);

test('an unreachable target is a clear error, not a run of zeros', { timeout: 30_000 }, async () => {
  const port = await freePort(); // free now, so nothing listens there
  const r = await runCli([
    '--target',
    `http://127.0.0.1:${port}`,
    '--key',
    'sks_x',
    '--workspace',
    'ws_x',
    '--duration',
    '2s',
  ]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, new RegExp(`cannot reach http://127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\)`));
  assert.match(r.stderr, /METERD_BENCH_TARGET_UNREACHABLE/);
});

test('a wrong key is refused before any load, naming the workspace', { timeout: 60_000 }, async () => {
  // A stand-in answering as ingest does for a revoked key: the CLI must stop before any load.
  const { createServer } = await import('node:http');
  const server = createServer((req, res) => {
    if (req.url === '/healthz') return res.end('{"status":"ok"}');
    res
      .writeHead(401, { 'content-type': 'application/json' })
      .end('{"error":{"code":"invalid_api_key","message":"the API key is not valid or has been revoked"}}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  try {
    const r = await runCli([
      '--target',
      `http://127.0.0.1:${port}`,
      '--key',
      'sks_wrong',
      '--workspace',
      'ws_abc',
      '--duration',
      '2s',
    ]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /refused the API key \(401 invalid_api_key/);
    assert.match(r.stderr, /ws_abc/);
  } finally {
    server.close();
  }
});
