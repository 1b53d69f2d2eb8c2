import { batchRecord, type EventRow, type RecordBatch } from '@meterd/core/clickhouse';
import type { Counter, Histogram } from '@meterd/core/metrics';
import type { AppendCallback, Spool } from './spool/writer.js';

/** Inserts rows into ClickHouse's `events`; resolves once ClickHouse acknowledged the insert. */
export type InsertEvents = (rows: EventRow[]) => Promise<void>;

/** What the acknowledgement path reports in ingest's metrics (the spool's own, reused). */
export interface AckMetrics {
  /** From a group's insert starting to its acknowledgement. */
  commitSeconds?: Histogram;
  /** The events insert alone. */
  insertSeconds?: Histogram;
  insertedRows?: Counter;
}

/**
 * INGEST_ACK=clickhouse: the pipeline's "spool" is ClickHouse itself. Every group's rows are
 * inserted before its requests get their 202, so nothing acknowledged waits on a local disk and a
 * lost volume loses nothing (for deployments with ephemeral disks). The pipeline commits the
 * groups' dedupe keys after the insert and releases them if it failed, exactly as after a spool
 * write.
 *
 * Group commit, as the spool's: one events insert is in flight at a time, and every group that
 * arrives meanwhile goes into the next one, so inserts per second stay near 1 / insert latency
 * however many requests come (ClickHouse wants few, large inserts: each makes a part). Each insert
 * is then recorded for the aggregator like a shipped spool batch, under its own batch id, before
 * its 202; that record overlaps the next events insert (records stay in insert order), as the
 * spool's fdatasync overlaps the next write.
 */
export class ClickHouseAck implements Spool {
  private lines: string[] = [];
  private callbacks: AppendCallback[] = [];
  private scheduled = false;
  private inserting = false;
  private seq = 0;
  /** The last batch record written or being written: the next one starts after it. */
  private recorded: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly insert: InsertEvents,
    private readonly record: RecordBatch | undefined,
    /** Unique to this thread's run: batch ids are `<prefix>:<n>`. */
    private readonly batchPrefix: string,
    private readonly metrics: AckMetrics = {},
  ) {}

  append(data: string, _rows: number, done: AppendCallback): void {
    this.lines.push(data);
    this.callbacks.push(done);
    this.kick();
  }

  /** setImmediate: the other groups settled in this I/O phase join the same insert. */
  private kick(): void {
    if (this.scheduled || this.inserting || this.lines.length === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    const data = this.lines.join('');
    const callbacks = this.callbacks;
    this.lines = [];
    this.callbacks = [];
    this.inserting = true;
    const started = performance.now();
    this.write(data, started).then(
      () => this.settle(callbacks, null, started),
      (err: unknown) => this.settle(callbacks, err instanceof Error ? err : new Error(String(err)), started),
    );
  }

  private settle(callbacks: AppendCallback[], err: Error | null, started: number): void {
    if (err === null) this.metrics.commitSeconds?.observe((performance.now() - started) / 1000);
    for (const cb of callbacks) cb(err);
  }

  private async write(data: string, started: number): Promise<void> {
    // Parsed once for both the insert (RowBinary) and the aggregator's batch record.
    const rows: EventRow[] = [];
    for (let start = 0; start < data.length;) {
      const nl = data.indexOf('\n', start);
      rows.push(JSON.parse(data.slice(start, nl)) as EventRow);
      start = nl + 1;
    }
    try {
      await this.insert(rows);
    } finally {
      // The next groups' insert may start now, whatever came of this one.
      this.inserting = false;
      this.kick();
    }
    this.metrics.insertSeconds?.observe((performance.now() - started) / 1000);
    this.metrics.insertedRows?.inc(rows.length);
    if (this.record === undefined) return;
    // Before the 202: a window the aggregator never hears of would stay unrolled.
    const id = `${this.batchPrefix}:${this.seq++}`;
    const mine = this.recorded.catch(() => {}).then(() => this.record!(batchRecord(id, 1, rows)));
    this.recorded = mine;
    await mine;
  }
}
