import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { createLogger } from '@meterd/core/log';
import { MetricsRegistry } from '@meterd/core/metrics';
import { defineIngestMetrics } from '../metrics.js';
import { SpoolWriter } from './writer.js';
import { SpoolShipper } from './shipper.js';
import { processStartTime } from './lock.js';
import { segmentPath } from './segments.js';

const dir = () => mkdtempSync(join(tmpdir(), 'spool-lock-'));
const opts = { segmentBytes: 1 << 20, fsync: 'always' } as const;
const append = (w: SpoolWriter, data: string) =>
  new Promise<void>((res, rej) => w.append(data, 1, (e) => (e ? rej(e) : res())));
const lockedBy = (d: string, pid: number) => (err: unknown) => {
  const e = err as { code?: string; message: string };
  assert.equal(e.code, 'METERD_INGEST_SPOOL_LOCKED');
  assert.ok(e.message.includes(d), 'the message names the folder');
  assert.ok(e.message.includes(`process ${pid}`), 'the message names the holder pid');
  return true;
};

test('a second open of a folder that is open is refused; after close it succeeds', async () => {
  const d = dir();
  const w = SpoolWriter.open(d, opts);
  assert.throws(() => SpoolWriter.open(d, opts), lockedBy(d, process.pid));
  await append(w, '{"n":1}\n');
  await w.close();
  const w2 = SpoolWriter.open(d, opts);
  assert.equal(w2.unshippedRows, 1, 'the rows of the first writer are recovered, not deleted');
  await w2.close();
  assert.equal(existsSync(join(d, 'lock')), false, 'close releases the lock');
});

test('another live process holding the folder is refused (real second process)', async () => {
  const d = dir();
  const w = SpoolWriter.open(d, opts);
  await append(w, '{"acked":1}\n');
  const writerUrl = new URL('./writer.js', import.meta.url).href;
  const script = `import(${JSON.stringify(writerUrl)}).then((m) => { try { m.SpoolWriter.open(${JSON.stringify(d)}, { segmentBytes: 1 << 20, fsync: 'always' }); console.log('opened'); } catch (e) { console.log(e.code + ' ' + e.message); } })`;
  const out = await new Promise<string>((res, rej) =>
    execFile(process.execPath, ['--input-type=module', '-e', script], (err, stdout) => (err ? rej(err) : res(stdout))),
  );
  assert.match(out, /^METERD_INGEST_SPOOL_LOCKED /);
  assert.ok(out.includes(`process ${process.pid}`));
  // Our live segment is untouched by the refused process.
  const sink: Buffer[] = [];
  const s = new SpoolShipper(
    w,
    async (b) => {
      sink.push(Buffer.from(b));
    },
    {
      batchRows: 100,
      intervalMs: 10,
      metrics: defineIngestMetrics(new MetricsRegistry()),
      log: createLogger('t', 'silent'),
    },
  );
  await s.shipOnce();
  assert.equal(Buffer.concat(sink).toString(), '{"acked":1}\n');
  await w.close();
});

test('a lock naming a live process is refused; once that process is gone it is taken over', async () => {
  const d = dir();
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  await once(child, 'spawn');
  const pid = child.pid!;
  writeFileSync(join(d, 'lock'), JSON.stringify({ pid, start: processStartTime(pid), thread: 0 }));
  assert.throws(() => SpoolWriter.open(d, opts), lockedBy(d, pid));
  child.kill('SIGKILL');
  await once(child, 'exit');
  const w = SpoolWriter.open(d, opts);
  await w.close();
});

test('a lock whose pid now belongs to a process started at another time (pid reuse) is stale', async () => {
  const d = dir();
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  await once(child, 'spawn');
  try {
    writeFileSync(
      join(d, 'lock'),
      JSON.stringify({ pid: child.pid, start: (processStartTime(child.pid!) ?? 0) - 1, thread: 0 }),
    );
    const w = SpoolWriter.open(d, opts);
    await w.close();
  } finally {
    child.kill('SIGKILL');
  }
});

test('a writer that lost its lock ships but never deletes segments', async () => {
  const d = dir();
  const w = SpoolWriter.open(d, { segmentBytes: 10, fsync: 'never' });
  await append(w, '{"n":1}\n{"n":2}\n'); // past segmentBytes: rotates, the first segment is sealed
  const sealed = w.segments[0]!.seq;
  assert.equal(w.segments[0]!.sealed, true);
  // Someone removed our lock and another process took the folder.
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  await once(child, 'spawn');
  try {
    writeFileSync(join(d, 'lock'), JSON.stringify({ pid: child.pid, start: processStartTime(child.pid!), thread: 0 }));
    const s = new SpoolShipper(w, async () => {}, {
      batchRows: 100,
      intervalMs: 10,
      metrics: defineIngestMetrics(new MetricsRegistry()),
      log: createLogger('t', 'silent'),
    });
    assert.equal(await s.shipOnce(), 2);
    await assert.rejects(s.shipOnce(), (e: { code?: string }) => e.code === 'METERD_INGEST_SPOOL_LOCK_LOST');
    assert.ok(existsSync(segmentPath(d, sealed)), 'the segment is kept');
  } finally {
    child.kill('SIGKILL');
  }
  await w.close();
});
