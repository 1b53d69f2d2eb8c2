import { close, fdatasync, ftruncate, openSync, closeSync, unlinkSync, write } from 'node:fs';
import type { Counter, Histogram } from '@meterd/core';
import { listSegments, readCheckpoint, segmentPath, syncDir, trimTornTail, type Position } from './segments.js';

export interface SpoolWriterOptions {
  segmentBytes: number;
  fsync: boolean;
  fsyncs?: Counter;
  commitSeconds?: Histogram;
}

export type AppendCallback = (err: Error | null) => void;

/** The seam the pipeline writes to: durable once the callback runs without error. */
export interface Spool {
  append(data: string, rows: number, done: AppendCallback): void;
}

interface Segment { seq: number; size: number }

/**
 * Append-only spool with group commit. Appends arriving while a write + fdatasync is in flight are
 * gathered and written together by the next one, so the cost of a sync is shared by every request
 * of that moment (one fsync per group, not per request) and throughput rises with load.
 * A callback runs only after its bytes are on disk: that is when ingest may answer 202.
 */
export class SpoolWriter implements Spool {
  /** Segments not yet deleted, with their durable sizes; the last one is being written. */
  readonly segments: Segment[] = [];
  /** Rows durable in the spool and not yet shipped, as known to this writer (the shipper lowers it). */
  unshippedRows = 0;
  private fd: number;
  private pending: string[] = [];
  private pendingRows = 0;
  private waiters: AppendCallback[] = [];
  private flushing = false;
  private closed = false;
  /** Why closing the previous segment failed, if it did (kept for diagnostics). */
  lastCloseError: Error | undefined;

  private constructor(readonly dir: string, private readonly opts: SpoolWriterOptions) {
    const existing = listSegments(dir);
    const cp = readCheckpoint(dir);
    for (const seq of existing) {
      // Fully shipped before a crash that came between the checkpoint and the delete.
      if (seq < cp.segment) {
        unlinkSync(segmentPath(dir, seq));
        continue;
      }
      const { size, rows } = trimTornTail(segmentPath(dir, seq), seq === cp.segment ? cp.offset : 0);
      this.segments.push({ seq, size });
      this.unshippedRows += rows;
    }
    // Never append to a segment a crashed process was writing: start a fresh one.
    const seq = Math.max(cp.segment, existing.at(-1) ?? 0) + 1;
    this.fd = openSync(segmentPath(dir, seq), 'a');
    syncDir(dir);
    this.segments.push({ seq, size: 0 });
  }

  static open(dir: string, opts: SpoolWriterOptions): SpoolWriter {
    return new SpoolWriter(dir, opts);
  }

  /** The first byte not yet durable: everything before it may be shipped. */
  get durableEnd(): Position {
    const s = this.segments.at(-1)!;
    return { segment: s.seq, offset: s.size };
  }

  /** Durable bytes at or after `cp`. */
  bytesAfter(cp: Position): number {
    let n = 0;
    for (const s of this.segments) {
      if (s.seq > cp.segment) n += s.size;
      else if (s.seq === cp.segment) n += s.size - cp.offset;
    }
    return n;
  }

  append(data: string, rows: number, done: AppendCallback): void {
    if (this.closed) {
      done(new Error('spool is closed'));
      return;
    }
    this.pending.push(data);
    this.pendingRows += rows;
    this.waiters.push(done);
    if (!this.flushing) {
      this.flushing = true;
      // setImmediate: let the rest of this I/O phase's requests join the group before writing.
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    const waiters = this.waiters;
    const buf = Buffer.from(this.pending.length === 1 ? this.pending[0]! : this.pending.join(''));
    const rows = this.pendingRows;
    this.pending = [];
    this.pendingRows = 0;
    this.waiters = [];
    const seg = this.segments.at(-1)!;
    const fd = this.fd;
    const started = performance.now();
    this.writeAll(fd, buf, 0, (err) => {
      if (err) return this.failGroup(fd, seg, waiters, err);
      if (!this.opts.fsync) return this.groupDone(seg, buf.length, rows, waiters, started);
      fdatasync(fd, (syncErr) => {
        if (syncErr) return this.failGroup(fd, seg, waiters, syncErr);
        this.opts.fsyncs?.inc();
        this.groupDone(seg, buf.length, rows, waiters, started);
      });
    });
  }

  private writeAll(fd: number, buf: Buffer, from: number, cb: (err: Error | null) => void): void {
    write(fd, buf, from, buf.length - from, null, (err, n) => {
      if (err) return cb(err);
      if (from + n < buf.length) return this.writeAll(fd, buf, from + n, cb);
      cb(null);
    });
  }

  private groupDone(seg: Segment, bytes: number, rows: number, waiters: AppendCallback[], started: number): void {
    seg.size += bytes;
    this.unshippedRows += rows;
    this.opts.commitSeconds?.observe((performance.now() - started) / 1000);
    if (seg.size >= this.opts.segmentBytes) this.rotate();
    for (const w of waiters) w(null);
    this.next();
  }

  /**
   * A failed write or sync leaves the file's tail unknown. Cut it back to the last durable byte,
   * so rows whose requests got an error are not shipped later; if even that fails, abandon the
   * segment at its durable size and go on in a new one.
   */
  private failGroup(fd: number, seg: Segment, waiters: AppendCallback[], err: Error): void {
    ftruncate(fd, seg.size, (truncErr) => {
      if (truncErr) this.rotate();
      const e = new Error(`writing to the spool in ${this.dir} failed: ${err.message}`, { cause: err });
      for (const w of waiters) w(e);
      this.next();
    });
  }

  private next(): void {
    if (this.pending.length > 0) setImmediate(() => this.flush());
    else this.flushing = false;
  }

  private rotate(): void {
    const last = this.segments.at(-1)!;
    try {
      closeSync(this.fd);
    } catch (err) {
      // Rotation after a failed write: the old descriptor may be unusable (EBADF, EIO). Its
      // durable bytes are already on disk and it is never written again, so only note the cause.
      this.lastCloseError = err as Error;
    }
    this.fd = openSync(segmentPath(this.dir, last.seq + 1), 'a');
    syncDir(this.dir);
    this.segments.push({ seq: last.seq + 1, size: 0 });
  }

  /** Waits for appends in flight, then closes the file. */
  async close(): Promise<void> {
    while (this.flushing) await new Promise((r) => setTimeout(r, 1));
    this.closed = true;
    await new Promise<void>((resolve) => close(this.fd, () => resolve()));
  }
}
