import { open, unlink } from 'node:fs/promises';
import { batchWinners, type BatchRecord, type EventRow, type RecordBatch } from '@meterd/core/clickhouse';
import { batchRecordWithMeters, type MeterPartialsOf } from '@meterd/core/meters';
import { type Logger } from '@meterd/core/log';
import { Loop } from '@meterd/core/loop';
import type { IngestMetrics } from '../metrics.js';
import { readCheckpoint, removeDurableMark, segmentPath, spoolId, writeCheckpoint, type Position } from './segments.js';
import type { SpoolWriter } from './writer.js';
import { rowRejectionCode } from './insert-errors.js';
import { quarantineRows, type QuarantinedRow } from './quarantine.js';
import { SpoolRowEncodingError } from './errors.js';

/**
 * A spool line as the shipper parsed it, once per ship: the row, or why the line is not one (a
 * torn or foreign line; the inserter refuses it and bisecting moves it to quarantine).
 */
export type ParsedLine = EventRow | SpoolRowEncodingError;

/**
 * Where shipped rows go: the batch's spool lines (JSONEachRow, one row per line) and the same lines
 * parsed, index for index. ClickHouse's inserter encodes the parsed rows (RowBinary), so each line
 * is parsed once per ship, for the insert and the batch record alike.
 */
export type InsertRows = (lines: Buffer, rows: readonly ParsedLine[]) => Promise<void>;

/**
 * Ships a batch's rows and its record together with the other threads' batches, in the process's
 * ship round (ship-rounds.ts). `alone`: not shipped, the shipper ships it by itself (a refused row,
 * or no round open); otherwise it was, and `insertSeconds` is the round insert's time for the one
 * thread that reports it. Throws when the round's insert failed.
 */
export type ShipTogether = (
  rows: readonly ParsedLine[],
  record: BatchRecord,
) => Promise<{ alone: true } | { alone: false; insertSeconds?: number | undefined }>;

export interface ShipperOptions {
  batchRows: number;
  intervalMs: number;
  metrics: IngestMetrics;
  log: Logger;
  /**
   * Records each shipped batch for the aggregator (core's batch record), after its events and
   * before the checkpoint moves. Left out only where nothing aggregates (tests of the spool alone).
   */
  record?: RecordBatch;
  /**
   * Ship in the process's ship rounds (ship-rounds.ts) instead of on this shipper's own timer:
   * the main thread then starts each attempt (shipInRound).
   */
  together?: ShipTogether;
  /** The batch's meter partials (core/meters), carried in its record. */
  meterPartials?: MeterPartialsOf;
}

/** Bytes read per ship at most; rows are ~200–300 bytes, so 50k rows fit in well under this. */
const MAX_READ_BYTES = 32 << 20;
const MAX_BACKOFF_MS = 5_000;

/**
 * Ships durable spool rows to ClickHouse in large inserts and advances the checkpoint only after
 * ClickHouse acknowledged them. A crash between the two replays the same bytes: the events table
 * (ReplacingMergeTree on the idempotency triple) collapses the copies, and readers group by the
 * triple, so a replay never counts twice. A ClickHouse outage only makes the spool grow.
 *
 * A batch ClickHouse refuses for its content (a parse error: retrying can never help) is split in
 * halves until the refused rows stand alone; those go to `quarantine/` with the server's error and
 * the checkpoint moves past them, so one bad row cannot stop a thread's shipping for good.
 * Transient errors (network, timeouts, 5xx without a parse code) retry with backoff instead.
 */
export class SpoolShipper {
  private cp: Position;
  private readonly loop: Loop;
  /** The attempt a ship round started, which stop() waits for. */
  private inRound: Promise<unknown> | undefined;
  private stopping = false;
  private failures = 0;
  lastError: string | undefined;
  /** Rows moved to quarantine by this shipper. */
  quarantinedRows = 0;
  /** When the current failure streak began (epoch ms); undefined while shipping works. */
  failingSince: number | undefined;
  private lastSuccessAt = Date.now();
  private readonly spoolId: string;

  constructor(
    private readonly writer: SpoolWriter,
    private readonly insert: InsertRows,
    private readonly opts: ShipperOptions,
  ) {
    this.cp = readCheckpoint(writer.dir);
    this.spoolId = spoolId(writer.dir);
    this.updateGauges();
    // tick() turns shipping errors into the state /readyz reports; onError sees only a bug in it.
    this.loop = new Loop(() => this.tick(), {
      intervalMs: opts.intervalMs,
      onError: (err) => opts.log.error({ err }, 'ship tick failed'),
    });
  }

  get unshippedBytes(): number {
    return this.writer.bytesAfter(this.cp);
  }

  /** Time since a ship attempt last succeeded (an idle attempt counts): /readyz reports a stuck shipper by it. */
  get msSinceLastSuccess(): number {
    return Date.now() - this.lastSuccessAt;
  }

  /** Ships on its own timer, unless the process's ship rounds start its attempts. */
  start(): void {
    if (this.opts.together === undefined) this.loop.start();
  }

  /** One attempt, started by the process's ship round. */
  async shipInRound(): Promise<void> {
    if (this.stopping) return;
    this.inRound = this.attempt();
    await this.inRound;
  }

  /**
   * One ship attempt; returns the delay before the next: at once while full batches remain, backoff
   * on failure, else what is left of `intervalMs` counted from this attempt's start. Ships start
   * once per interval, so a row waits at most one interval plus its own insert, and a slow insert
   * never stretches the period (nor raises the insert rate past 1000 / intervalMs per thread).
   */
  private async tick(): Promise<number> {
    const started = performance.now();
    const full = await this.attempt();
    if (this.failures > 0) return Math.min(MAX_BACKOFF_MS, 100 * 2 ** this.failures);
    return full ? 0 : Math.max(0, this.opts.intervalMs - (performance.now() - started));
  }

  /** One ship attempt with its failure accounting; true when it shipped a full batch. */
  private async attempt(): Promise<boolean> {
    let full = false;
    try {
      const shipped = await this.shipOnce();
      full = shipped >= this.opts.batchRows;
      if (this.failures > 0) this.opts.log.info({ after_failures: this.failures }, 'shipping to ClickHouse recovered');
      this.failures = 0;
      this.lastError = undefined;
      this.failingSince = undefined;
    } catch (err) {
      this.failures++;
      this.failingSince ??= Date.now();
      this.lastError = (err as Error).message;
      this.opts.metrics.shipFailures.inc();
      // One line per failure streak step, not per event: an outage must not flood the log.
      if (this.failures === 1 || this.failures % 20 === 0) {
        this.opts.log.warn(
          { err, failures: this.failures, unshipped_bytes: this.unshippedBytes },
          'shipping spool to ClickHouse failed; retrying',
        );
      }
    }
    return full;
  }

  /** Ships one insert's worth of rows from the checkpoint on; returns how many rows it shipped. */
  async shipOnce(): Promise<number> {
    const segs = this.writer.segments;
    let seg;
    for (;;) {
      const first = segs[0];
      if (first === undefined) return this.succeeded(0);
      if (this.cp.segment < first.seq) this.cp = { segment: first.seq, offset: 0 };
      seg = segs.find((s) => s.seq === this.cp.segment);
      if (seg === undefined) return this.succeeded(0);
      if (this.cp.offset < seg.size) break;
      // Only a segment this writer sealed is finished: the one being written may still grow.
      if (!seg.sealed) return this.succeeded(0);
      // Deleting is only safe while this process owns the folder (another writer's files are not ours).
      this.writer.assertOwner();
      // A finished segment: move on and delete it. The checkpoint moves first, so a crash in
      // between leaves a file that recovery skips (its number is below the checkpoint's).
      this.cp = { segment: seg.seq + 1, offset: 0 };
      writeCheckpoint(this.writer.dir, this.cp);
      segs.splice(segs.indexOf(seg), 1);
      await unlink(segmentPath(this.writer.dir, seg.seq));
      removeDurableMark(this.writer.dir, seg.seq);
    }
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
    if (rows === 0) return this.succeeded(0);
    const started = performance.now();
    const batch = buf.subarray(0, end);
    const parsed = parseLines(batch, rows);
    // Named by where it starts: a replay after a crash starts at the same checkpoint, and its end
    // (the attempt) is at least as far, since the spool only grows; the latest attempt wins.
    const batchId = `${this.spoolId}:${seg.seq}:${this.cp.offset}`;
    const attempt = this.cp.offset + end;
    const recordOf = (refused: ReadonlySet<number>): Promise<BatchRecord> =>
      batchRecordWithMeters(batchId, attempt, batchWinners(shippedRows(parsed, refused)), this.opts.meterPartials);
    const round =
      this.opts.together === undefined || this.stopping
        ? undefined
        : await this.opts.together(parsed, await recordOf(new Set()));
    if (round === undefined || round.alone) {
      let refused: ReadonlySet<number> = new Set();
      try {
        await this.insert(batch, parsed);
      } catch (err) {
        if (rowRejectionCode(err) === undefined) throw err;
        refused = await this.isolateRejected(batch, parsed, seg.seq, this.cp.offset, err as Error);
      }
      await this.opts.record?.(await recordOf(refused));
      this.opts.metrics.shipSeconds.observe((performance.now() - started) / 1000);
    } else if (round.insertSeconds !== undefined) {
      this.opts.metrics.shipSeconds.observe(round.insertSeconds);
    }
    this.cp = { segment: seg.seq, offset: this.cp.offset + end };
    writeCheckpoint(this.writer.dir, this.cp);
    this.writer.unshippedRows -= rows;
    this.opts.metrics.shippedRows.inc(rows);
    this.updateGauges();
    return this.succeeded(rows);
  }

  private succeeded(rows: number): number {
    this.lastSuccessAt = Date.now();
    return rows;
  }

  /**
   * Bisects a refused batch: halves are inserted on their own, and halves refused again are split
   * further, until each refused row stands alone (~2·log2(n) inserts for one bad row in n). The
   * refused rows are made durable in quarantine before the caller moves the checkpoint. A transient
   * error on the way throws: the whole batch is retried later, and rows inserted twice collapse in
   * the events table like any replay.
   */
  private async isolateRejected(
    batch: Buffer,
    parsed: readonly ParsedLine[],
    segment: number,
    offset: number,
    first: Error,
  ): Promise<ReadonlySet<number>> {
    const starts = [0];
    for (let i = batch.indexOf(10); i !== -1; i = batch.indexOf(10, i + 1)) starts.push(i + 1);
    const refused: QuarantinedRow[] = [];
    const indexes = new Set<number>();
    const refuse = (i: number, err: Error): void => {
      indexes.add(i);
      refused.push({
        segment,
        offset: offset + starts[i]!,
        error: err.message.slice(0, 2_000),
        row: batch.toString('utf8', starts[i]!, starts[i + 1]! - 1),
      });
    };
    const split = async (lo: number, hi: number, err: Error): Promise<void> => {
      if (hi - lo === 1) return refuse(lo, err);
      const mid = (lo + hi) >>> 1;
      for (const [a, b] of [
        [lo, mid],
        [mid, hi],
      ] as const) {
        try {
          await this.insert(batch.subarray(starts[a]!, starts[b]!), parsed.slice(a, b));
        } catch (e) {
          if (rowRejectionCode(e) === undefined) throw e;
          await split(a, b, e as Error);
        }
      }
    };
    await split(0, starts.length - 1, first);
    if (refused.length === 0) return indexes;
    const file = await quarantineRows(this.writer.dir, refused);
    this.quarantinedRows += refused.length;
    this.opts.metrics.quarantinedRows.inc(refused.length);
    this.opts.log.error(
      {
        quarantined_rows: refused.length,
        batch_rows: starts.length - 1,
        segment,
        offset,
        file,
        clickhouse_error: refused[0]!.error.slice(0, 300),
      },
      'ClickHouse refused spool rows for their content; moved them to quarantine and shipped the rest',
    );
    return indexes;
  }

  updateGauges(): void {
    this.opts.metrics.spoolBytes.set(this.unshippedBytes);
    this.opts.metrics.spoolRows.set(Math.max(0, this.writer.unshippedRows));
  }

  /** Stops shipping (its timer, or its part in the ship rounds); with `flushWithinMs`, then ships alone what it can in that time. */
  async stop(flushWithinMs = 0): Promise<void> {
    this.stopping = true;
    await this.loop.stop();
    await this.inRound;
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

/** Each of a batch's `count` lines (each ends with a newline) parsed; a line that is not JSON as its error. */
export function parseLines(batch: Buffer, count: number): ParsedLine[] {
  const out = new Array<ParsedLine>(count);
  let start = 0;
  for (let i = 0; i < count; i++) {
    const nl = batch.indexOf(10, start);
    const stop = nl === -1 ? batch.length : nl;
    try {
      out[i] = JSON.parse(batch.toString('utf8', start, stop)) as EventRow;
    } catch (err) {
      out[i] = new SpoolRowEncodingError(err);
    }
    start = stop + 1;
  }
  return out;
}

/** The rows of a shipped batch that ClickHouse stored (all but the refused line indexes). */
function* shippedRows(parsed: readonly ParsedLine[], refused: ReadonlySet<number>): Generator<EventRow> {
  for (let i = 0; i < parsed.length; i++) {
    const r = parsed[i]!;
    if (!refused.has(i) && !(r instanceof SpoolRowEncodingError)) yield r;
  }
}
