import { close, closeSync, fdatasync, fdatasyncSync, ftruncate, openSync, unlinkSync, write } from 'node:fs';
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

/**
 * When an append counts as durable, and so when ingest may answer 202:
 * - `always`: after an fdatasync that covers it. An acknowledged row survives a power loss.
 * - `interval`: once the kernel has it (a write(2) returned); fdatasync runs every `fsyncIntervalMs`.
 *   A kill -9 of ingest loses nothing (the page cache outlives the process); a power loss or
 *   kernel crash may lose what was acknowledged in the last interval.
 * - `never`: no fdatasync at all, for benchmarks on throwaway disks.
 */
export type SpoolFsync = 'always' | 'interval' | 'never';

export interface SpoolWriterOptions {
  segmentBytes: number;
  fsync: SpoolFsync;
  /** `interval` only: how often written bytes are synced. */
  fsyncIntervalMs?: number;
  fsyncs?: Counter;
  /** `interval` only: background syncs that failed (acknowledged rows a power loss could now take). */
  fsyncErrors?: Counter;
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

/** Largest group written while an fdatasync is in flight (see write()). */
const OVERLAP_MAX_BYTES = 16 << 10;

/** Appends written together by one write(2). */
interface Group {
  bytes: number;
  rows: number;
  waiters: AppendCallback[];
  started: number;
}

/**
 * Append-only spool with pipelined group commit. Appends that arrive while a write is in flight
 * are gathered and written together by the next one; with `fsync: always` one fdatasync at a time
 * runs beside the writes and acknowledges every group written before it started. The next group's
 * write therefore overlaps the current sync, and a sync's cost is shared by everything written
 * during the previous one: throughput is no longer connections ÷ (write + sync latency).
 * A callback runs only once its bytes are durable in the chosen mode: that is when ingest may answer 202.
 *
 * The file is only ever extended or cut back while nothing else is in flight on it: a failed write
 * or sync waits for the other operation, then cuts the tail back to the last durable byte and fails
 * every group past it; a rotation waits until all written bytes are synced.
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
  /** UTF-16 length of `pending`: bytes for the ASCII rows ingest writes, cheap to keep. */
  private pendingChars = 0;
  private waiters: AppendCallback[] = [];
  private scheduled = false;
  private writing = false;
  private syncing = false;
  /** `always`: written groups waiting for a sync (all in the current segment). */
  private unsynced: Group[] = [];
  /** Bytes written to the current segment and not yet durable (in `unsynced` or being synced). */
  private unsyncedBytes = 0;
  /** `interval`: bytes were written since the last sync started. */
  private dirty = false;
  /** Set from a failed write or sync until the tail has been cut back and its groups failed. */
  private failure: { err: Error; waiters: AppendCallback[] } | undefined;
  private recovering = false;
  private readonly syncTimer: NodeJS.Timeout | undefined;
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
    if (opts.fsync === 'interval') {
      this.syncTimer = setInterval(() => this.syncWritten(), opts.fsyncIntervalMs ?? 1000);
      this.syncTimer.unref();
    }
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
    this.pendingChars += data.length;
    this.waiters.push(done);
    this.kick();
  }

  /** Arms the next write. setImmediate: let the rest of this I/O phase's requests join the group. */
  private kick(): void {
    if (this.scheduled || this.writing || this.pending.length === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.write();
    });
  }

  private write(): void {
    if (this.writing || this.failure !== undefined || this.pending.length === 0) return;
    // Overlap only small groups with a sync in flight. A large group written meanwhile dirties pages
    // that sync may flush too without being allowed to acknowledge them, so its bytes would be
    // flushed twice; it waits and is written whole after the sync (bench/micro/spool.ts).
    if (this.syncing && this.opts.fsync === 'always' && this.pendingChars > OVERLAP_MAX_BYTES) return;
    if (this.fd === undefined || this.rotateDue) {
      // The sync that ends this wait kicks the write again.
      if (!this.quiet) return;
      this.rotate();
    }
    const group: Group = { bytes: 0, rows: this.pendingRows, waiters: this.waiters, started: performance.now() };
    const buf = Buffer.from(this.pending.length === 1 ? this.pending[0]! : this.pending.join(''));
    group.bytes = buf.length;
    this.pending = [];
    this.pendingRows = 0;
    this.pendingChars = 0;
    this.waiters = [];
    const fd = this.fd;
    if (fd === undefined) {
      const cause = this.rotateError;
      const e = new Error(
        `writing to the spool in ${this.dir} failed: no segment to write to (${cause?.message ?? 'unknown'})`,
        { cause },
      );
      for (const w of group.waiters) w(e);
      return this.kick();
    }
    const seg = this.segments.at(-1)!;
    this.writing = true;
    this.writeAll(fd, buf, 0, (err) => {
      this.writing = false;
      if (err) return this.fail(group.waiters, err);
      if (this.failure !== undefined) {
        // A sync failed meanwhile: the tail is cut back past this group too.
        this.failure.waiters.push(...group.waiters);
        return this.recover();
      }
      if (seg.size + this.unsyncedBytes + group.bytes >= this.opts.segmentBytes) this.rotateDue = true;
      if (this.opts.fsync === 'always') {
        this.unsynced.push(group);
        this.unsyncedBytes += group.bytes;
        this.sync();
      } else {
        this.dirty = true;
        this.commit(seg, group);
        this.rotateWhenQuiet();
      }
      this.kick();
    });
  }

  private writeAll(fd: number, buf: Buffer, from: number, cb: (err: Error | null) => void): void {
    this.io.write(fd, buf, from, buf.length - from, (err, n) => {
      if (err) return cb(err);
      if (from + n < buf.length) return this.writeAll(fd, buf, from + n, cb);
      cb(null);
    });
  }

  /** `always`: one fdatasync at a time, covering every group written before it started. */
  private sync(): void {
    if (this.syncing || this.failure !== undefined || this.unsynced.length === 0) return;
    const fd = this.fd!;
    const seg = this.segments.at(-1)!;
    const groups = this.unsynced;
    this.unsynced = [];
    this.syncing = true;
    this.io.fdatasync(fd, (err) => {
      this.syncing = false;
      if (err) return this.fail(groupWaiters(groups), err);
      this.opts.fsyncs?.inc();
      for (const g of groups) {
        this.unsyncedBytes -= g.bytes;
        this.commit(seg, g);
      }
      this.sync();
      this.rotateWhenQuiet();
      this.kick();
    });
  }

  /** `interval`: the background sync. A failure is counted and retried; the rows were acknowledged already. */
  private syncWritten(): void {
    if (!this.dirty || this.syncing || this.failure !== undefined || this.fd === undefined) return;
    this.dirty = false;
    this.syncing = true;
    this.io.fdatasync(this.fd, (err) => {
      this.syncing = false;
      if (err) {
        this.dirty = true;
        this.opts.fsyncErrors?.inc();
        this.opts.log?.error(
          { err },
          'background fdatasync of the spool failed; acknowledged rows may not survive a power loss',
        );
      } else {
        this.opts.fsyncs?.inc();
      }
      this.rotateWhenQuiet();
      this.kick();
    });
  }

  /**
   * Rotation closes the file, so it waits until nothing is in flight on it and all of it is
   * durable. Done as soon as that holds, so a full segment is sealed (and deletable once shipped)
   * without waiting for the next append.
   */
  private get quiet(): boolean {
    return !this.writing && !this.syncing && this.unsynced.length === 0 && this.failure === undefined;
  }

  private rotateWhenQuiet(): void {
    if (this.rotateDue && this.quiet) this.rotate();
  }

  private commit(seg: Segment, g: Group): void {
    seg.size += g.bytes;
    this.unshippedRows += g.rows;
    this.opts.commitSeconds?.observe((performance.now() - g.started) / 1000);
    for (const w of g.waiters) w(null);
  }

  private fail(waiters: AppendCallback[], err: Error): void {
    if (this.failure === undefined) this.failure = { err, waiters };
    else this.failure.waiters.push(...waiters);
    this.recover();
  }

  /**
   * A failed write or sync leaves the file's tail unknown. Once nothing else is in flight, cut it
   * back to the last durable byte and fail every group past it, so rows whose requests got an
   * error are not shipped later; if even that fails, abandon the segment at its durable size,
   * recorded in a sidecar so recovery cuts it there too, and go on in a new one.
   */
  private recover(): void {
    const f = this.failure;
    if (f === undefined || this.recovering || this.writing || this.syncing) return;
    this.recovering = true;
    const waiters = f.waiters.concat(groupWaiters(this.unsynced));
    this.unsynced = [];
    this.unsyncedBytes = 0;
    const fd = this.fd!;
    const seg = this.segments.at(-1)!;
    this.io.ftruncate(fd, seg.size, (truncErr) => {
      if (truncErr) this.abandon(fd, seg, truncErr);
      this.failure = undefined;
      this.recovering = false;
      const e = new Error(`writing to the spool in ${this.dir} failed: ${f.err.message}`, { cause: f.err });
      for (const w of waiters) w(e);
      this.kick();
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
    this.dirty = false;
    this.rotate();
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
    if (this.fd !== undefined) {
      this.syncBeforeClose(this.fd);
      this.closeQuietly(this.fd);
    }
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

  /**
   * `interval`: a segment is closed (rotation, shutdown) only after its last writes are synced,
   * so the power-loss window stays one interval. Rare and short, so it may block.
   */
  private syncBeforeClose(fd: number): void {
    if (!this.dirty) return;
    this.dirty = false;
    try {
      fdatasyncSync(fd);
      this.opts.fsyncs?.inc();
    } catch (err) {
      this.opts.fsyncErrors?.inc();
      this.opts.log?.error({ err }, 'fdatasync of a spool segment before closing it failed');
    }
  }

  private get busy(): boolean {
    return (
      this.scheduled ||
      this.writing ||
      this.syncing ||
      this.recovering ||
      this.pending.length > 0 ||
      this.unsynced.length > 0
    );
  }

  /** Waits for appends in flight (written and, as the mode asks, synced), then closes the file and releases the folder's lock. */
  async close(): Promise<void> {
    while (this.busy) await new Promise((r) => setTimeout(r, 1));
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.syncTimer);
    const fd = this.fd;
    this.fd = undefined;
    if (fd !== undefined) {
      this.syncBeforeClose(fd);
      await new Promise<void>((resolve) => close(fd, () => resolve()));
    }
    this.lock.release();
  }
}

function groupWaiters(groups: Group[]): AppendCallback[] {
  const out: AppendCallback[] = [];
  for (const g of groups) out.push(...g.waiters);
  return out;
}
