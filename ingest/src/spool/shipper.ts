import { open, unlink } from 'node:fs/promises';
import type { Logger } from '@meterd/core';
import type { IngestMetrics } from '../metrics.js';
import { readCheckpoint, segmentPath, writeCheckpoint, type Position } from './segments.js';
import type { SpoolWriter } from './writer.js';

/** Where shipped rows go. The ClickHouse implementation posts JSONEachRow bytes as they are. */
export type InsertRows = (body: Buffer) => Promise<void>;

export interface ShipperOptions {
  batchRows: number;
  intervalMs: number;
  metrics: IngestMetrics;
  log: Logger;
}

/** Bytes read per ship at most; rows are ~200–300 bytes, so 50k rows fit in well under this. */
const MAX_READ_BYTES = 32 << 20;
const MAX_BACKOFF_MS = 5_000;

/**
 * Ships durable spool rows to ClickHouse in large inserts and advances the checkpoint only after
 * ClickHouse acknowledged them. A crash between the two replays the same bytes: the events table
 * (ReplacingMergeTree on the idempotency triple) collapses the copies, and readers group by the
 * triple, so a replay never counts twice. A ClickHouse outage only makes the spool grow.
 */
export class SpoolShipper {
  private cp: Position;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private failures = 0;
  private stopped = false;
  lastError: string | undefined;

  constructor(private readonly writer: SpoolWriter, private readonly insert: InsertRows, private readonly opts: ShipperOptions) {
    this.cp = readCheckpoint(writer.dir);
    this.updateGauges();
  }

  get unshippedBytes(): number {
    return this.writer.bytesAfter(this.cp);
  }

  start(): void {
    this.schedule(0);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.tick().finally(() => (this.running = undefined));
    }, ms);
  }

  private async tick(): Promise<void> {
    let full = false;
    try {
      const shipped = await this.shipOnce();
      full = shipped >= this.opts.batchRows;
      if (this.failures > 0) this.opts.log.info({ after_failures: this.failures }, 'shipping to ClickHouse recovered');
      this.failures = 0;
      this.lastError = undefined;
    } catch (err) {
      this.failures++;
      this.lastError = (err as Error).message;
      this.opts.metrics.shipFailures.inc();
      // One line per failure streak step, not per event: an outage must not flood the log.
      if (this.failures === 1 || this.failures % 20 === 0) {
        this.opts.log.warn({ err, failures: this.failures, unshipped_bytes: this.unshippedBytes }, 'shipping spool to ClickHouse failed; retrying');
      }
    }
    const backoff = this.failures === 0 ? (full ? 0 : this.opts.intervalMs) : Math.min(MAX_BACKOFF_MS, 100 * 2 ** this.failures);
    this.schedule(backoff);
  }

  /** Ships one insert's worth of rows from the checkpoint on; returns how many rows it shipped. */
  async shipOnce(): Promise<number> {
    const segs = this.writer.segments;
    for (;;) {
      const first = segs[0]!;
      if (this.cp.segment < first.seq) this.cp = { segment: first.seq, offset: 0 };
      const seg = segs.find((s) => s.seq === this.cp.segment)!;
      const sealed = seg !== segs.at(-1);
      if (this.cp.offset < seg.size) break;
      if (!sealed) return 0;
      // A finished segment: move on and delete it. The checkpoint moves first, so a crash in
      // between leaves a file that recovery skips (its number is below the checkpoint's).
      this.cp = { segment: seg.seq + 1, offset: 0 };
      writeCheckpoint(this.writer.dir, this.cp);
      segs.splice(segs.indexOf(seg), 1);
      await unlink(segmentPath(this.writer.dir, seg.seq));
    }
    const seg = segs.find((s) => s.seq === this.cp.segment)!;
    const want = Math.min(seg.size - this.cp.offset, MAX_READ_BYTES);
    const buf = Buffer.allocUnsafe(want);
    const fh = await open(segmentPath(this.writer.dir, seg.seq), 'r');
    let got = 0;
    try {
      while (got < want) {
        const { bytesRead } = await fh.read(buf, got, want - got, this.cp.offset + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
    } finally {
      await fh.close();
    }
    // Cut after the batchRows-th row, or after the last whole row read.
    let rows = 0;
    let end = 0;
    for (let i = buf.indexOf(10, 0); i !== -1 && i < got; i = buf.indexOf(10, i + 1)) {
      rows++;
      end = i + 1;
      if (rows === this.opts.batchRows) break;
    }
    if (rows === 0) return 0;
    const started = performance.now();
    await this.insert(buf.subarray(0, end));
    this.opts.metrics.shipSeconds.observe((performance.now() - started) / 1000);
    this.cp = { segment: seg.seq, offset: this.cp.offset + end };
    writeCheckpoint(this.writer.dir, this.cp);
    this.writer.unshippedRows -= rows;
    this.opts.metrics.shippedRows.inc(rows);
    this.updateGauges();
    return rows;
  }

  updateGauges(): void {
    this.opts.metrics.spoolBytes.set(this.unshippedBytes);
    this.opts.metrics.spoolRows.set(Math.max(0, this.writer.unshippedRows));
  }

  /** Stops the loop; with `flushWithinMs`, first ships what it can in that time. */
  async stop(flushWithinMs = 0): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
    const deadline = Date.now() + flushWithinMs;
    while (Date.now() < deadline && this.unshippedBytes > 0) {
      try {
        await this.shipOnce();
      } catch (err) {
        this.opts.log.warn({ err }, 'could not ship the spool before stopping; it ships at the next start');
        break;
      }
    }
  }
}
