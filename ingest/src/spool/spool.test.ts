import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '@meterd/core/log';
import { MetricsRegistry } from '@meterd/core/metrics';
import { defineIngestMetrics } from '../metrics.js';
import { SpoolWriter } from './writer.js';
import { SpoolShipper } from './shipper.js';
import { readCheckpoint, segmentPath } from './segments.js';

const log = createLogger('spool-test', 'silent');
const dir = () => mkdtempSync(join(tmpdir(), 'spool-'));
const append = (w: SpoolWriter, data: string, rows = 1) =>
  new Promise<void>((res, rej) => w.append(data, rows, (e) => (e ? rej(e) : res())));

function shipperFor(w: SpoolWriter, sink: Buffer[], opts: { batchRows?: number; fail?: () => boolean } = {}) {
  const metrics = defineIngestMetrics(new MetricsRegistry());
  return new SpoolShipper(
    w,
    async (b) => {
      if (opts.fail?.()) throw new Error('ClickHouse is down');
      sink.push(Buffer.from(b));
    },
    { batchRows: opts.batchRows ?? 1000, intervalMs: 10, metrics, log },
  );
}

test('appends in the same tick share one write + fdatasync (group commit)', async () => {
  const reg = new MetricsRegistry();
  const metrics = defineIngestMetrics(reg);
  const w = SpoolWriter.open(dir(), { segmentBytes: 1 << 20, fsync: 'always', fsyncs: metrics.spoolFsyncs });
  await Promise.all(Array.from({ length: 50 }, (_, i) => append(w, `{"n":${i}}\n`)));
  assert.match(reg.render(), /^meterd_ingest_spool_fsyncs_total 1$/m);
  const lines = readFileSync(segmentPath(w.dir, w.durableEnd.segment), 'utf8').trim().split('\n');
  assert.equal(lines.length, 50);
  assert.equal(w.unshippedRows, 50);
  await w.close();
});

test('a torn last row left by a crash is cut away on reopen; whole rows are kept and shipped once', async () => {
  const d = dir();
  const w = SpoolWriter.open(d, { segmentBytes: 1 << 20, fsync: 'always' });
  await append(w, '{"n":1}\n{"n":2}\n', 2);
  const seg = w.durableEnd.segment;
  await w.close();
  appendFileSync(segmentPath(d, seg), '{"n":3'); // a write the crash interrupted: never acknowledged
  const w2 = SpoolWriter.open(d, { segmentBytes: 1 << 20, fsync: 'always' });
  assert.equal(readFileSync(segmentPath(d, seg), 'utf8'), '{"n":1}\n{"n":2}\n');
  assert.equal(w2.unshippedRows, 2);
  assert.ok(w2.durableEnd.segment > seg, 'a reopened spool writes to a fresh segment');
  const sink: Buffer[] = [];
  const s = shipperFor(w2, sink);
  assert.equal(await s.shipOnce(), 2);
  assert.equal(await s.shipOnce(), 0);
  assert.equal(Buffer.concat(sink).toString(), '{"n":1}\n{"n":2}\n');
  assert.equal(s.unshippedBytes, 0);
  await w2.close();
});

test('the checkpoint moves only after the insert succeeded; a restart ships from it', async () => {
  const d = dir();
  const w = SpoolWriter.open(d, { segmentBytes: 1 << 20, fsync: 'always' });
  await append(w, '{"n":1}\n{"n":2}\n{"n":3}\n', 3);
  const sink: Buffer[] = [];
  let down = true;
  const s = shipperFor(w, sink, { batchRows: 2, fail: () => down });
  await assert.rejects(s.shipOnce(), /ClickHouse is down/);
  assert.deepEqual(readCheckpoint(d), { segment: 0, offset: 0 });
  down = false;
  assert.equal(await s.shipOnce(), 2, 'batchRows caps one insert');
  const cp = readCheckpoint(d);
  assert.equal(cp.offset, 16);
  await w.close();
  // "Crash" here: a new writer and shipper on the same folder continue from the checkpoint.
  const w2 = SpoolWriter.open(d, { segmentBytes: 1 << 20, fsync: 'always' });
  const s2 = shipperFor(w2, sink);
  while ((await s2.shipOnce()) > 0);
  assert.equal(Buffer.concat(sink).toString(), '{"n":1}\n{"n":2}\n{"n":3}\n');
  // Shipped segments are deleted; only the live one remains.
  await s2.shipOnce();
  assert.deepEqual(
    readdirSync(d).filter((f) => f.endsWith('.ndjson')),
    [segmentPath(d, w2.durableEnd.segment).split('/').pop()],
  );
  await w2.close();
});

test('segments rotate at their size limit and ship in order', async () => {
  const d = dir();
  const w = SpoolWriter.open(d, { segmentBytes: 20, fsync: 'never' });
  for (let i = 0; i < 6; i++) await append(w, `{"n":${i}}\n`);
  assert.ok(w.segments.length >= 3);
  const sink: Buffer[] = [];
  const s = shipperFor(w, sink);
  for (let i = 0; i < 20; i++) await s.shipOnce();
  assert.equal(Buffer.concat(sink).toString(), [0, 1, 2, 3, 4, 5].map((i) => `{"n":${i}}\n`).join(''));
  await w.close();
});

test('a failed write is cut back, so rows whose requests got an error are never shipped', async () => {
  const d = dir();
  const w = SpoolWriter.open(d, { segmentBytes: 1 << 20, fsync: 'always' });
  await append(w, '{"ok":1}\n');
  const seg = w.durableEnd.segment;
  // Force the next write to fail by closing the descriptor under the writer.
  const { closeSync } = await import('node:fs');
  closeSync((w as unknown as { fd: number }).fd);
  await assert.rejects(append(w, '{"lost":1}\n'), /writing to the spool/);
  assert.equal(statSync(segmentPath(d, seg)).size, '{"ok":1}\n'.length);
  // The writer rotated to a fresh segment and keeps working.
  await append(w, '{"ok":2}\n');
  const sink: Buffer[] = [];
  const s = shipperFor(w, sink);
  for (let i = 0; i < 5; i++) await s.shipOnce();
  assert.equal(Buffer.concat(sink).toString(), '{"ok":1}\n{"ok":2}\n');
});

test('the segment being written is never deleted, even when everything in it has shipped', async () => {
  const d = dir();
  const w = SpoolWriter.open(d, { segmentBytes: 1 << 20, fsync: 'always' });
  const live = w.durableEnd.segment;
  await append(w, '{"n":1}\n');
  const sink: Buffer[] = [];
  const s = shipperFor(w, sink);
  assert.equal(await s.shipOnce(), 1);
  assert.equal(await s.shipOnce(), 0);
  assert.equal(w.segments.find((x) => x.seq === live)?.sealed, false);
  assert.ok(statSync(segmentPath(d, live)).isFile(), 'the live segment is still there');
  await append(w, '{"n":2}\n');
  assert.equal(await s.shipOnce(), 1);
  assert.equal(Buffer.concat(sink).toString(), '{"n":1}\n{"n":2}\n');
  await w.close();
  // Its rows survive a restart too (the checkpoint, not a deletion, says they shipped).
  const w2 = SpoolWriter.open(d, { segmentBytes: 1 << 20, fsync: 'always' });
  assert.equal(w2.unshippedRows, 0);
  assert.equal(
    w2.segments.find((x) => x.seq === live)?.sealed,
    true,
    'a recovered segment is sealed by the writer that recovered it',
  );
  await w2.close();
});

test('ships start at most once per interval on average, even when an insert takes most of it; each gets its lines parsed once', async () => {
  const w = SpoolWriter.open(dir(), { segmentBytes: 1 << 20, fsync: 'never' });
  const INTERVAL = 150;
  const SHIPS = 11;
  const starts: number[] = [];
  const seen: { lines: string[]; rows: unknown[] }[] = [];
  const s = new SpoolShipper(
    w,
    async (lines, rows) => {
      starts.push(performance.now());
      seen.push({ lines: lines.toString().trim().split('\n'), rows: [...rows] });
      await new Promise((r) => setTimeout(r, 100));
    },
    { batchRows: 1000, intervalMs: INTERVAL, metrics: defineIngestMetrics(new MetricsRegistry()), log },
  );
  let n = 0;
  let feeding = true;
  // Rows keep arriving, so every tick has something to ship.
  const feeder = (async () => {
    while (feeding) {
      await append(w, `{"n":${n++}}\n`);
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  s.start();
  const deadline = Date.now() + 60_000;
  while (starts.length < SHIPS && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  await s.stop();
  feeding = false;
  await feeder;
  await w.close();
  assert.ok(starts.length >= SHIPS, `only ${starts.length} ships within 60 s`);
  // Ticks start INTERVAL apart or more; an insert starts after the tick's read of the spool, whose
  // time varies, so single gaps may be a little shorter while the mean over ten may not.
  const meanGap = (starts[SHIPS - 1]! - starts[0]!) / (SHIPS - 1);
  assert.ok(meanGap >= INTERVAL - 15, `ships started ${meanGap.toFixed(1)} ms apart on average`);
  for (const b of seen)
    assert.deepEqual(
      b.rows,
      b.lines.map((l) => JSON.parse(l) as unknown),
    );
});
