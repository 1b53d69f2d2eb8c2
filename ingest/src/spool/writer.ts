import { close, closeSync, fdatasync, ftruncate, openSync, unlinkSync, write } from 'node:fs';
import { type Logger } from '@meterd/core/log';
import { type Counter, type Histogram } from '@meterd/core/metrics';
import { FolderLock } from './lock.js';
import {
  listSegments,
  readCheckpoint,
  readDurableMark,
  removeDurableMark,
  segmentPath,
  syncDir,
  trimTornTail,
  writeDurableMark,
  type Position,
} from './segments.js';

/** The file calls the writer makes, replaceable so tests can inject disk failures. */
export interface SpoolIo {
  openSegment(path: string): number;
  write(
    fd: number,
    buf: Buffer,
    offset: number,
    length: number,
    cb: (err: Error | null, written: number) => void,
  ): void;
  fdatasync(fd: number, cb: (err: Error | null) => void): void;
  ftruncate(fd: number, len: number, cb: (err: Error | null) => void): void;
}

const nodeIo: SpoolIo = {
  openSegment: (path) => openSync(path, 'a'),
  write: (fd, buf, offset, length, cb) => write(fd, buf, offset, length, null, cb),
  fdatasync,
  ftruncate,
};

export interface SpoolWriterOptions {
  segmentBytes: number;
  fsync: boolean;
  fsyncs?: Counter;
  commitSeconds?: Histogram;
  /** Where rotation and abandon failures are reported (they are survived, not thrown). */
  log?: Logger;
  io?: Partial<SpoolIo>;
}

export type AppendCallback = (err: Error | null) => void;

/** The seam the pipeline writes to: durable once the callback runs without error. */
export interface Spool {
  append(data: string, rows: number, done: AppendCallback): void;
}

/** `sealed`: this writer will never write it again, so once shipped it may be deleted. */
export interface Segment {
  seq: number;
  size: number;
  sealed: boolean;
}

/**
 * Append-only spool with group commit. Appends arriving while a write + fdatasync is in flight are
 * gathered and written together by the next one, so the cost of a sync is shared by every request
 * of that moment (one fsync per group, not per request) and throughput rises with load.
 * A callback runs only after its bytes are on disk: that is when ingest may answer 202.
 *
 * Nothing here throws from an fs callback: in a uWS worker thread an uncaught error aborts the
 * whole process. A rotation that fails keeps writing the current segment (or, when there is no
 * usable one, fails that group with the error) and is tried again at the next group.
 */
export class SpoolWriter implements Spool {
  /** Segments not yet deleted, with their durable sizes; the last one is written unless sealed. */
  readonly segments: Segment[] = [];
  /** Rows durable in the spool and not yet shipped, as known to this writer (the shipper lowers it). */
  unshippedRows = 0;
  /** Descriptor of the segment being written; undefined after an abandon whose rotation failed. */
  private fd: number | undefined;
  private nextSeq: number;
  private rotateDue = false;
  private rotateError: Error | undefined;
  private pending: string[] = [];
  private pendingRows = 0;
  private waiters: AppendCallback[] = [];
  private flushing = false;
  private closed = false;
  private readonly io: SpoolIo;
  /** Why closing or abandoning a previous segment failed, if it did (kept for diagnostics). */
  lastCloseError: Error | undefined;

  private constructor(
    readonly dir: string,
    private readonly opts: SpoolWriterOptions,
    private readonly lock: FolderLock,
  ) {
    this.io = { ...nodeIo, ...opts.io };
    const existing = listSegments(dir);
    const cp = readCheckpoint(dir);
    for (const seq of existing) {
      // Fully shipped before a crash that came between the checkpoint and the delete.
      if (seq < cp.segment) {
        unlinkSync(segmentPath(dir, seq));
        removeDurableMark(dir, seq);
        continue;
      }
      const durable = readDurableMark(dir, seq);
      const { size, rows } = trimTornTail(segmentPath(dir, seq), seq === cp.segment ? cp.offset : 0, durable);
      // A crashed writer's segment: recovered here, never appended to again.
      this.segments.push({ seq, size, sealed: true });
      this.unshippedRows += rows;
    }
    // Never append to a segment a crashed process was writing: start a fresh one.
    this.nextSeq = Math.max(cp.segment, existing.at(-1) ?? 0) + 1;
    // At start-up a failure may throw: open() refuses to start rather than run without a segment.
    this.fd = this.io.openSegment(segmentPath(dir, this.nextSeq));
    syncDir(dir);
    this.segments.push({ seq: this.nextSeq++, size: 0, sealed: false });
  }

  /** Takes the folder's lock (SpoolLockedError if a live process holds it), recovers, opens a fresh segment. */
  static open(dir: string, opts: SpoolWriterOptions): SpoolWriter {
    listSegments(dir); // creates the folder
    const lock = FolderLock.acquire(dir);
    try {
      return new SpoolWriter(dir, opts, lock);
    } catch (err) {
      lock.release();
      throw err;
    }
  }

  /** Throws SpoolLockLostError unless this writer still holds the folder: checked before deleting files. */
  assertOwner(): void {
    this.lock.assertHeld();
  }

  /** The first byte not yet durable: everything before it may be shipped. */
  get durableEnd(): Position {
    const s = this.segments.at(-1);
    return s === undefined ? { segment: this.nextSeq, offset: 0 } : { segment: s.seq, offset: s.size };
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
    if (this.fd === undefined || this.rotateDue) this.rotate();
    const fd = this.fd;
    if (fd === undefined) {
      const cause = this.rotateError;
      const e = new Error(
        `writing to the spool in ${this.dir} failed: no segment to write to (${cause?.message ?? 'unknown'})`,
        { cause },
      );
      for (const w of waiters) w(e);
      return this.next();
    }
    const seg = this.segments.at(-1)!;
    const started = performance.now();
    this.writeAll(fd, buf, 0, (err) => {
      if (err) return this.failGroup(fd, seg, waiters, err);
      if (!this.opts.fsync) return this.groupDone(seg, buf.length, rows, waiters, started);
      this.io.fdatasync(fd, (syncErr) => {
        if (syncErr) return this.failGroup(fd, seg, waiters, syncErr);
        this.opts.fsyncs?.inc();
        this.groupDone(seg, buf.length, rows, waiters, started);
      });
    });
  }

  private writeAll(fd: number, buf: Buffer, from: number, cb: (err: Error | null) => void): void {
    this.io.write(fd, buf, from, buf.length - from, (err, n) => {
      if (err) return cb(err);
      if (from + n < buf.length) return this.writeAll(fd, buf, from + n, cb);
      cb(null);
    });
  }

  private groupDone(seg: Segment, bytes: number, rows: number, waiters: AppendCallback[], started: number): void {
    seg.size += bytes;
    this.unshippedRows += rows;
    this.opts.commitSeconds?.observe((performance.now() - started) / 1000);
    if (seg.size >= this.opts.segmentBytes) {
      this.rotateDue = true;
      this.rotate();
    }
    for (const w of waiters) w(null);
    this.next();
  }

  /**
   * A failed write or sync leaves the file's tail unknown. Cut it back to the last durable byte,
   * so rows whose requests got an error are not shipped later; if even that fails, abandon the
   * segment at its durable size, recorded in a sidecar so recovery cuts it there too, and go on
   * in a new one.
   */
  private failGroup(fd: number, seg: Segment, waiters: AppendCallback[], err: Error): void {
    this.io.ftruncate(fd, seg.size, (truncErr) => {
      if (truncErr) this.abandon(fd, seg, truncErr);
      const e = new Error(`writing to the spool in ${this.dir} failed: ${err.message}`, { cause: err });
      for (const w of waiters) w(e);
      this.next();
    });
  }

  private abandon(fd: number, seg: Segment, why: Error): void {
    try {
      writeDurableMark(this.dir, seg.seq, seg.size);
    } catch (markErr) {
      // The disk refuses even a tiny file: rows of the failed group may ship after a restart. They
      // got a 503 and their keys were released, so a retry stores a copy the events table collapses.
      this.lastCloseError = markErr as Error;
      this.opts.log?.error(
        { err: markErr, segment: seg.seq, durable_bytes: seg.size },
        'could not record the durable size of an abandoned spool segment',
      );
    }
    this.opts.log?.warn(
      { err: why, segment: seg.seq, durable_bytes: seg.size },
      'abandoning spool segment after a failed write could not be cut back',
    );
    seg.sealed = true;
    this.closeQuietly(fd);
    this.fd = undefined;
    this.rotate();
  }

  private next(): void {
    if (this.pending.length > 0) setImmediate(() => this.flush());
    else this.flushing = false;
  }

  /** Starts the next segment; on failure keeps the current one (if any) and leaves rotateDue set. Never throws. */
  private rotate(): void {
    const seq = this.nextSeq;
    const path = segmentPath(this.dir, seq);
    let fd: number;
    try {
      fd = this.io.openSegment(path);
    } catch (err) {
      return this.rotateFailed(err as Error, seq);
    }
    try {
      // The new name must be durable before a row written there is acknowledged.
      syncDir(this.dir);
    } catch (err) {
      this.closeQuietly(fd);
      return this.rotateFailed(err as Error, seq);
    }
    const current = this.segments.at(-1);
    if (this.fd !== undefined) this.closeQuietly(this.fd);
    if (current !== undefined) current.sealed = true;
    this.fd = fd;
    this.nextSeq = seq + 1;
    this.segments.push({ seq, size: 0, sealed: false });
    this.rotateDue = false;
    if (this.rotateError !== undefined) this.opts.log?.info({ segment: seq }, 'spool segment rotation recovered');
    this.rotateError = undefined;
  }

  private rotateFailed(err: Error, seq: number): void {
    this.rotateDue = true;
    if (this.rotateError === undefined) {
      this.opts.log?.warn(
        { err, segment: seq, writing: this.fd !== undefined },
        'starting a new spool segment failed; retrying at the next write',
      );
    }
    this.rotateError = err;
  }

  private closeQuietly(fd: number): void {
    try {
      closeSync(fd);
    } catch (err) {
      // After a failed write the descriptor may be unusable (EBADF, EIO). Its durable bytes are
      // already on disk and it is never written again, so only note the cause.
      this.lastCloseError = err as Error;
    }
  }

  /** Waits for appends in flight, then closes the file and releases the folder's lock. */
  async close(): Promise<void> {
    while (this.flushing) await new Promise((r) => setTimeout(r, 1));
    if (this.closed) return;
    this.closed = true;
    const fd = this.fd;
    this.fd = undefined;
    if (fd !== undefined) await new Promise<void>((resolve) => close(fd, () => resolve()));
    this.lock.release();
  }
}
