import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, fdatasync, ftruncate, mkdtempSync, openSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '@meterd/core/log';
import { MetricsRegistry } from '@meterd/core/metrics';
import { defineIngestMetrics } from '../metrics.js';
import { SpoolWriter, type SpoolIo } from './writer.js';
import { SpoolShipper } from './shipper.js';
import { durableMarkPath, segmentPath } from './segments.js';

/**
 * Disk failures injected through the writer's SpoolIo seam: a failed fdatasync whose tail cannot
 * be cut back, and segment files that cannot be opened (EMFILE/ENOSPC).
 */
const log = createLogger('disk-test', 'silent');
const dir = () => mkdtempSync(join(tmpdir(), 'spool-disk-'));
const append = (w: SpoolWriter, data: string) =>
  new Promise<void>((res, rej) => w.append(data, 1, (e) => (e ? rej(e) : res())));
const errno = (code: string) => Object.assign(new Error(`${code}: injected`), { code });

async function shipAll(w: SpoolWriter): Promise<string> {
  const sink: Buffer[] = [];
  const s = new SpoolShipper(
    w,
    async (b) => {
      sink.push(Buffer.from(b));
    },
    { batchRows: 1000, intervalMs: 10, metrics: defineIngestMetrics(new MetricsRegistry()), log },
  );
  for (let i = 0; i < 20; i++) await s.shipOnce();
  return Buffer.concat(sink).toString();
}

/** Real file calls, with switches to make some of them fail. */
function faultyIo(f: { sync?: boolean; truncate?: boolean; open?: boolean }): Partial<SpoolIo> {
  return {
    openSegment: (path) => {
      if (f.open) throw errno('EMFILE');
      return openSync(path, 'a');
    },
    fdatasync: (fd, cb) => (f.sync ? setImmediate(() => cb(errno('EIO'))) : fdatasync(fd, cb)),
    ftruncate: (fd, len, cb) => (f.truncate ? setImmediate(() => cb(errno('EIO'))) : ftruncate(fd, len, cb)),
  };
}

test('an abandoned segment is cut to its durable size on recovery: rows answered with an error never ship', async () => {
  const d = dir();
  const f = { sync: false, truncate: false };
  const w = SpoolWriter.open(d, { segmentBytes: 1 << 20, fsync: 'always', io: faultyIo(f) });
  await append(w, '{"ok":1}\n');
  const seg = w.durableEnd.segment;
  f.sync = true;
  f.truncate = true;
  // The bytes reach the file but their fdatasync fails and the tail cannot be cut: the client gets a 503.
  await assert.rejects(append(w, '{"failed":1}\n'), /writing to the spool/);
  assert.equal(
    statSync(segmentPath(d, seg)).size,
    '{"ok":1}\n{"failed":1}\n'.length,
    'the failed row is still in the file',
  );
  assert.equal(readFileSync(durableMarkPath(d, seg), 'utf8'), String('{"ok":1}\n'.length));
  f.sync = false;
  f.truncate = false;
  await append(w, '{"ok":2}\n');
  assert.notEqual(w.durableEnd.segment, seg, 'the writer moved to a new segment');
  await w.close();
  // Restart: recovery must not read the abandoned segment to its end.
  const w2 = SpoolWriter.open(d, { segmentBytes: 1 << 20, fsync: 'always' });
  assert.equal(statSync(segmentPath(d, seg)).size, '{"ok":1}\n'.length);
  assert.equal(w2.unshippedRows, 2);
  assert.equal(await shipAll(w2), '{"ok":1}\n{"ok":2}\n');
  assert.equal(existsSync(durableMarkPath(d, seg)), false, 'the sidecar goes with its shipped segment');
  await w2.close();
});

test('a rotation that cannot open a new segment keeps writing the current one and retries later', async () => {
  const d = dir();
  const f = { open: false };
  const w = SpoolWriter.open(d, { segmentBytes: 10, fsync: 'always', io: faultyIo(f) });
  const first = w.durableEnd.segment;
  f.open = true;
  // Each append crosses segmentBytes, so each one tries to rotate: without the fix the EMFILE is
  // thrown from an fs callback and kills the process.
  await append(w, '{"n":1}\n{"n":2}\n');
  await append(w, '{"n":3}\n');
  assert.equal(w.durableEnd.segment, first, 'still writing the first segment');
  assert.equal(w.segments.length, 1);
  f.open = false;
  await append(w, '{"n":4}\n');
  assert.ok(w.durableEnd.segment > first, 'rotation succeeded once files could be opened again');
  assert.equal(w.segments[0]!.sealed, true);
  assert.equal(await shipAll(w), '{"n":1}\n{"n":2}\n{"n":3}\n{"n":4}\n');
  await w.close();
});

test('with no usable segment (abandoned, and no new one can be opened) appends fail cleanly until a segment opens', async () => {
  const d = dir();
  const f = { sync: false, truncate: false, open: false };
  const w = SpoolWriter.open(d, { segmentBytes: 1 << 20, fsync: 'always', io: faultyIo(f) });
  await append(w, '{"ok":1}\n');
  Object.assign(f, { sync: true, truncate: true, open: true });
  await assert.rejects(append(w, '{"failed":1}\n'), /writing to the spool/);
  f.sync = false;
  f.truncate = false;
  await assert.rejects(append(w, '{"failed":2}\n'), /no segment to write to.*EMFILE/);
  f.open = false;
  await append(w, '{"ok":2}\n');
  assert.equal(await shipAll(w), '{"ok":1}\n{"ok":2}\n');
  await w.close();
});
