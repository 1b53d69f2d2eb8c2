import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fdatasync, mkdtempSync, readFileSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '@meterd/core/log';
import { MetricsRegistry } from '@meterd/core/metrics';
import { defineIngestMetrics } from '../metrics.js';
import { SpoolWriter, type SpoolIo } from './writer.js';
import { SpoolShipper } from './shipper.js';
import { segmentPath } from './segments.js';

/**
 * The pipelined group commit and the SPOOL_FSYNC modes, driven through the SpoolIo seam: each
 * fdatasync is held until the test releases it, so what is written, synced and acknowledged at
 * every step is observed, not timed.
 */
const log = createLogger('pipelined-test', 'silent');
const dir = () => mkdtempSync(join(tmpdir(), 'spool-pipe-'));
const errno = (code: string) => Object.assign(new Error(`${code}: injected`), { code });

/** Real writes; every fdatasync waits in `held` until released with an outcome. */
function heldSyncs() {
  const held: { release: (fail?: boolean) => void; bytesAtStart: number }[] = [];
  let writes = 0;
  let written = 0;
  const io: Partial<SpoolIo> = {
    write: (fd, buf, offset, length, cb) => {
      writes++;
      written += length;
      // Real write, answered a turn later as the async call would be.
      const n = writeSync(fd, buf, offset, length);
      setImmediate(() => cb(null, n));
    },
    fdatasync: (fd, cb) => {
      held.push({
        bytesAtStart: written,
        release: (fail) => (fail ? setImmediate(() => cb(errno('EIO'))) : fdatasync(fd, cb)),
      });
    },
  };
  return { io, held, writes: () => writes };
}

/** Resolves once `cond()` holds, checking after each turn of the event loop. */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 10_000; i++) {
    if (cond()) return;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function appendTracked(w: SpoolWriter, data: string) {
  const state = { done: false, err: null as Error | null };
  w.append(data, 1, (err) => {
    state.done = true;
    state.err = err;
  });
  return state;
}

async function shipAll(w: SpoolWriter): Promise<string> {
  const sink: Buffer[] = [];
  const s = new SpoolShipper(
    w,
    async (b) => {
      sink.push(Buffer.from(b));
    },
    { batchRows: 1000, intervalMs: 10, metrics: defineIngestMetrics(new MetricsRegistry()), log },
  );
  while ((await s.shipOnce()) > 0);
  return Buffer.concat(sink).toString();
}

test('always: the next group is written while the previous fdatasync is in flight, and each is acknowledged only by a sync that started after its write', async () => {
  const d = dir();
  const h = heldSyncs();
  const w = SpoolWriter.open(d, { segmentBytes: 1 << 20, fsync: 'always', io: h.io });
  const a = appendTracked(w, '{"a":1}\n');
  await until(() => h.held.length === 1, "A's sync");
  const b = appendTracked(w, '{"b":1}\n');
  // B reaches the file while A's sync is still held: the write overlaps the sync.
  await until(() => h.writes() === 2, "B's write during A's sync");
  assert.equal(readFileSync(segmentPath(d, w.durableEnd.segment), 'utf8'), '{"a":1}\n{"b":1}\n');
  assert.equal(a.done || b.done, false, 'nothing is acknowledged before a sync completes');
  assert.equal(h.held.length, 1, 'one sync in flight at a time');
  h.held[0]!.release();
  await until(() => a.done, 'A acknowledged');
  assert.equal(a.err, null);
  // A's sync started before B's write: it does not cover B, so B waits for its own.
  assert.equal(b.done, false);
  assert.equal(w.durableEnd.offset, '{"a":1}\n'.length, 'only A is durable, so only A may ship');
  await until(() => h.held.length === 2, "B's sync");
  h.held[1]!.release();
  await until(() => b.done, 'B acknowledged');
  assert.equal(b.err, null);
  assert.equal(w.durableEnd.offset, '{"a":1}\n{"b":1}\n'.length);
  await w.close();
});

test('always: a large group is not written beside a sync in flight (its pages would be flushed twice), but right after it', async () => {
  const d = dir();
  const h = heldSyncs();
  const w = SpoolWriter.open(d, { segmentBytes: 1 << 20, fsync: 'always', io: h.io });
  const a = appendTracked(w, '{"a":1}\n');
  await until(() => h.held.length === 1, "A's sync");
  const big = `{"big":"${'x'.repeat(20_000)}"}\n`;
  const b = appendTracked(w, big);
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
  assert.equal(h.writes(), 1, 'B waits for the sync');
  h.held[0]!.release();
  await until(() => a.done && h.held.length === 2, "B written after A's sync, and its own sync");
  h.held[1]!.release();
  await until(() => b.done, 'B acknowledged');
  assert.equal(b.err, null);
  await w.close();
});

test('always: a failed sync fails its groups and the group written beside it, cuts the file back, and the spool goes on', async () => {
  const d = dir();
  const h = heldSyncs();
  const w = SpoolWriter.open(d, { segmentBytes: 1 << 20, fsync: 'always', io: h.io });
  const ok = appendTracked(w, '{"ok":1}\n');
  await until(() => h.held.length === 1, 'first sync');
  h.held[0]!.release();
  await until(() => ok.done, 'first row acknowledged');
  const a = appendTracked(w, '{"failed":1}\n');
  await until(() => h.held.length === 2, "A's sync");
  const b = appendTracked(w, '{"failed":2}\n');
  await until(() => h.writes() === 3, "B's write during A's sync");
  h.held[1]!.release(true);
  await until(() => a.done && b.done, 'both answered');
  assert.match(String(a.err), /writing to the spool.*EIO/);
  assert.match(String(b.err), /writing to the spool.*EIO/, "B's bytes were past the failed sync's durable point");
  assert.equal(statSync(segmentPath(d, w.durableEnd.segment)).size, '{"ok":1}\n'.length, 'cut back');
  const c = appendTracked(w, '{"ok":2}\n');
  await until(() => h.held.length === 3, "C's sync");
  h.held[2]!.release();
  await until(() => c.done, 'C acknowledged');
  assert.equal(c.err, null);
  assert.equal(await shipAll(w), '{"ok":1}\n{"ok":2}\n', 'rows answered with an error never ship');
  await w.close();
});

test('always: a rotation waits for the sync in flight, then seals the full segment', async () => {
  const d = dir();
  const h = heldSyncs();
  const w = SpoolWriter.open(d, { segmentBytes: 10, fsync: 'always', io: h.io });
  const first = w.durableEnd.segment;
  const a = appendTracked(w, '{"a":1}\n{"a":2}\n');
  await until(() => h.held.length === 1, "A's sync");
  const b = appendTracked(w, '{"b":1}\n');
  // A crossed the size limit: B must not be written into a file that is about to be closed,
  // nor into a new one before A is durable.
  await new Promise((r) => setImmediate(r));
  assert.equal(h.writes(), 1);
  h.held[0]!.release();
  await until(() => a.done && h.held.length === 2, 'B written after the rotation, and its sync');
  assert.equal(w.segments[0]!.seq, first);
  assert.equal(w.segments[0]!.sealed, true);
  assert.equal(readFileSync(segmentPath(d, first), 'utf8'), '{"a":1}\n{"a":2}\n');
  h.held[1]!.release();
  await until(() => b.done, 'B acknowledged');
  assert.equal(readFileSync(segmentPath(d, w.durableEnd.segment), 'utf8'), '{"b":1}\n');
  assert.equal(await shipAll(w), '{"a":1}\n{"a":2}\n{"b":1}\n');
  await w.close();
});

/** An `interval` writer syncing every 5 ms through held fdatasyncs, with its metrics. */
function intervalWriter() {
  const h = heldSyncs();
  const reg = new MetricsRegistry();
  const metrics = defineIngestMetrics(reg);
  const w = SpoolWriter.open(dir(), {
    segmentBytes: 1 << 20,
    fsync: 'interval',
    fsyncIntervalMs: 5,
    fsyncs: metrics.spoolFsyncs,
    fsyncErrors: metrics.spoolFsyncErrors,
    log,
    io: h.io,
  });
  return { h, reg, w };
}

test('interval: an append is acknowledged once written, before any fdatasync; the background sync follows within the interval', async () => {
  const { h, reg, w } = intervalWriter();
  const a = appendTracked(w, '{"a":1}\n');
  await until(() => a.done, 'A acknowledged');
  assert.equal(a.err, null);
  assert.equal(w.durableEnd.offset, '{"a":1}\n'.length, 'written rows may ship: they survive kill -9');
  await until(() => h.held.length === 1, 'the background sync');
  assert.equal(h.held[0]!.bytesAtStart, '{"a":1}\n'.length);
  h.held[0]!.release();
  await until(() => /^meterd_ingest_spool_fsyncs_total 1$/m.test(reg.render()), 'the sync counted');
  // Nothing new written: the timer does not sync again.
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(h.held.length, 1);
  await w.close();
});

test('interval: a failed background sync is counted and retried; the acknowledged rows stay', async () => {
  const { h, reg, w } = intervalWriter();
  const a = appendTracked(w, '{"a":1}\n');
  await until(() => h.held.length === 1, 'the background sync');
  h.held[0]!.release(true);
  await until(() => /^meterd_ingest_spool_fsync_errors_total 1$/m.test(reg.render()), 'the failure counted');
  await until(() => h.held.length === 2, 'the retry');
  h.held[1]!.release();
  await until(() => /^meterd_ingest_spool_fsyncs_total 1$/m.test(reg.render()), 'the retry counted');
  assert.equal(a.err, null);
  assert.equal(await shipAll(w), '{"a":1}\n');
  await w.close();
});

test('interval: close() syncs what was written since the last background sync', async () => {
  const d = dir();
  const reg = new MetricsRegistry();
  const metrics = defineIngestMetrics(reg);
  // An interval longer than the test: only close() can sync.
  const w = SpoolWriter.open(d, {
    segmentBytes: 1 << 20,
    fsync: 'interval',
    fsyncIntervalMs: 10_000,
    fsyncs: metrics.spoolFsyncs,
  });
  await new Promise<void>((res, rej) => w.append('{"a":1}\n', 1, (e) => (e ? rej(e) : res())));
  assert.match(reg.render(), /^meterd_ingest_spool_fsyncs_total 0$/m);
  await w.close();
  assert.match(reg.render(), /^meterd_ingest_spool_fsyncs_total 1$/m);
});
