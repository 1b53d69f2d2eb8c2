import { batchRecord, type EventRow, type RecordBatch } from '@meterd/core/clickhouse';
import type { AppendCallback, Spool } from './spool/writer.js';

/** Inserts rows into ClickHouse's `events`; resolves once ClickHouse acknowledged the insert. */
export type InsertEvents = (rows: EventRow[]) => Promise<void>;

/**
 * INGEST_ACK=clickhouse: the pipeline's "spool" is ClickHouse itself. Every group's rows are
 * inserted before its requests get their 202, so nothing acknowledged waits on a local disk and a
 * lost volume loses nothing (for deployments with ephemeral disks). The pipeline commits the
 * groups' dedupe keys after the insert and releases them if it failed, exactly as after a spool
 * write.
 *
 * Group commit, as the spool's: one insert is in flight at a time, and every group that arrives
 * meanwhile goes into the next one, so inserts per second stay near 1 / insert latency however
 * many requests come (ClickHouse wants few, large inserts: each makes a part). Each insert is
 * recorded for the aggregator like a shipped spool batch, under its own batch id.
 */
export class ClickHouseAck implements Spool {
  private lines: string[] = [];
  private callbacks: AppendCallback[] = [];
  private scheduled = false;
  private inserting = false;
  private seq = 0;

  constructor(
    private readonly insert: InsertEvents,
    private readonly record: RecordBatch | undefined,
    /** Unique to this thread's run: batch ids are `<prefix>:<n>`. */
    private readonly batchPrefix: string,
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
    this.write(data).then(
      () => this.settle(callbacks, null),
      (err: unknown) => this.settle(callbacks, err instanceof Error ? err : new Error(String(err))),
    );
  }

  private settle(callbacks: AppendCallback[], err: Error | null): void {
    this.inserting = false;
    for (const cb of callbacks) cb(err);
    this.kick();
  }

  private async write(data: string): Promise<void> {
    // Parsed once for both the insert (RowBinary) and the aggregator's batch record.
    const rows: EventRow[] = [];
    for (let start = 0; start < data.length;) {
      const nl = data.indexOf('\n', start);
      rows.push(JSON.parse(data.slice(start, nl)) as EventRow);
      start = nl + 1;
    }
    await this.insert(rows);
    // Before the 202: a window the aggregator never hears of would stay unrolled.
    await this.record?.(batchRecord(`${this.batchPrefix}:${this.seq++}`, 1, rows));
  }
}
