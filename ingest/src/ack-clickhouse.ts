import { batchWinners, type EventRow, type RecordBatch } from '@meterd/core/clickhouse';
import { batchRecordWithMeters, type MeterPartialsOf } from '@meterd/core/meters';
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
 * Two stages, each a group commit with one call in flight, as the spool's write and fdatasync:
 * the events insert takes every group that arrived while the previous insert ran (inserts per
 * second stay near 1 / insert latency however many requests come: ClickHouse wants few, large
 * inserts, each makes a part); then the aggregator's batch record, the same as a shipped spool
 * batch's, takes every insert that finished while the previous record was written (a record is
 * two or three small inserts, slower than the events insert under load). A group is answered after
 * its record: a window the aggregator never hears of would stay unrolled. The record carries the
 * meters' partials exactly as the shipper's does (core's batchRecordWithMeters): without them the
 * meters' open hours would stay short in this mode until they close.
 */
export class ClickHouseAck implements Spool {
  private lines: string[] = [];
  private callbacks: AppendCallback[] = [];
  private scheduled = false;
  private inserting = false;
  /** Inserted, waiting for the batch record in flight to finish. */
  private inserted: { rows: EventRow[]; callbacks: AppendCallback[]; started: number }[] = [];
  private recording = false;
  private seq = 0;

  constructor(
    private readonly insert: InsertEvents,
    private readonly record: RecordBatch | undefined,
    /** Unique to this thread's run: batch ids are `<prefix>:<n>`. */
    private readonly batchPrefix: string,
    private readonly metrics: AckMetrics = {},
    /** The meters' partials of each record, as the spool's shipper writes them (none: no meters). */
    private readonly meterPartials?: MeterPartialsOf,
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
    let rows: EventRow[];
    try {
      rows = parseLines(data);
    } catch (err) {
      this.inserting = false;
      return settle(callbacks, err);
    }
    this.insert(rows).then(
      () => {
        this.inserting = false;
        this.kick();
        this.metrics.insertSeconds?.observe((performance.now() - started) / 1000);
        this.metrics.insertedRows?.inc(rows.length);
        this.inserted.push({ rows, callbacks, started });
        this.recordNext();
      },
      (err: unknown) => {
        this.inserting = false;
        this.kick();
        settle(callbacks, err);
      },
    );
  }

  private recordNext(): void {
    if (this.recording || this.inserted.length === 0) return;
    const done = this.inserted;
    this.inserted = [];
    const answer = (err: unknown): void => {
      const now = performance.now();
      for (const d of done) {
        if (err === null) this.metrics.commitSeconds?.observe((now - d.started) / 1000);
        settle(d.callbacks, err);
      }
    };
    if (this.record === undefined) return answer(null);
    this.recording = true;
    const record = this.record;
    batchRecordWithMeters(`${this.batchPrefix}:${this.seq++}`, 1, batchWinners(rowsOf(done)), this.meterPartials)
      .then((rec) => record(rec))
      .then(
        () => this.recorded(answer, null),
        (err: unknown) => this.recorded(answer, err),
      );
  }

  private recorded(answer: (err: unknown) => void, err: unknown): void {
    this.recording = false;
    answer(err);
    this.recordNext();
  }
}

function settle(callbacks: AppendCallback[], err: unknown): void {
  const e = err === null ? null : err instanceof Error ? err : new Error(String(err));
  for (const cb of callbacks) cb(e);
}

/** Spool lines (one JSONEachRow row each), parsed once for both the insert and the batch record. */
function parseLines(data: string): EventRow[] {
  const rows: EventRow[] = [];
  for (let start = 0; start < data.length;) {
    const nl = data.indexOf('\n', start);
    rows.push(JSON.parse(data.slice(start, nl)) as EventRow);
    start = nl + 1;
  }
  return rows;
}

function* rowsOf(groups: { rows: EventRow[] }[]): Generator<EventRow> {
  for (const g of groups) yield* g.rows;
}
