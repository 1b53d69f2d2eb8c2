import { ClickHouseQueryError, type BatchRecord, type RecordBatch } from '@meterd/core/clickhouse';
import type { Logger } from '@meterd/core/log';
import { Loop } from '@meterd/core/loop';
import { rowRejectionCode } from './insert-errors.js';
import { parsedRowsToRowBinary } from './row-binary.js';
import type { ParsedLine, ShipTogether, SpoolShipper } from './shipper.js';

/**
 * Ship rounds: one ship per ingest process per SHIP_INTERVAL_MS, carrying every thread's batch.
 *
 * Each thread keeps its own spool and checkpoint, but the main thread starts the rounds: it asks
 * every thread for its next batch, sends them all to ClickHouse as one insert into `events` and one
 * batch record, and tells each thread the outcome; a thread moves its checkpoint only after that,
 * as when it ships alone. The insert shape (at most 1000 / SHIP_INTERVAL_MS inserts per second per
 * table per process) then holds whatever INGEST_THREADS is, so the interval, the longest a row
 * waits for its ship, is half what it is with a shipper per thread at the same insert rate.
 *
 * A batch ClickHouse refuses for its content is shipped by each thread alone (insert, bisect,
 * quarantine, record: SpoolShipper), and so is a thread's final flush while it stops.
 */

/** Main thread → ingest thread. */
export type RoundRequest =
  | { type: 'ship-round'; round: number }
  | { type: 'ship-result'; round: number; error?: string; rejected?: boolean; insertSeconds?: number };

/** Ingest thread → main thread: its batch for the round (RowBinary rows and record), or none. */
export type RoundReply =
  | { type: 'ship-batch'; round: number; events: Uint8Array; record: BatchRecord; full: boolean }
  | { type: 'ship-none'; round: number };

type Outcome = Omit<Extract<RoundRequest, { type: 'ship-result' }>, 'type' | 'round'>;

export interface ShipRoundsOptions {
  intervalMs: number;
  /** One RowBinary insert into `events` (every thread's rows, concatenated). */
  insertEvents: (rowBinary: Buffer) => Promise<void>;
  record: RecordBatch;
  /** After a round's batches are recorded (the aggregators' wake-up, app's BATCHES_RECORDED_CHANNEL). */
  onShipped?: () => void;
  log: Logger;
}

const MAX_BACKOFF_MS = 5_000;

/** The main thread's side: starts the rounds and ships their batches. */
export class ShipRounds {
  private readonly members = new Map<number, (m: RoundRequest) => void>();
  private round = 0;
  private failures = 0;
  /** The round collecting batches: who has yet to answer, what came, how to end the wait. */
  private open:
    | { waiting: Set<number>; batches: Map<number, Extract<RoundReply, { type: 'ship-batch' }>>; end: () => void }
    | undefined;
  private readonly loop: Loop;

  constructor(private readonly opts: ShipRoundsOptions) {
    this.loop = new Loop((signal) => this.tick(signal), {
      intervalMs: opts.intervalMs,
      onError: (err) => opts.log.error({ err }, 'ship round failed'),
    });
  }

  /** A thread takes part from the next round on (once its shipper is up). */
  join(id: number, post: (m: RoundRequest) => void): void {
    this.members.set(id, post);
  }

  /** A thread that ended: the open round stops waiting for it. */
  leave(id: number): void {
    this.members.delete(id);
    this.answered(id);
  }

  receive(id: number, m: RoundReply): void {
    if (this.open === undefined || m.round !== this.round || !this.open.waiting.has(id)) {
      // Only an aborted round's late answer: its thread is told, so that it does not wait forever.
      if (m.type === 'ship-batch')
        this.members.get(id)?.({ type: 'ship-result', round: m.round, error: 'its ship round had ended' });
      return;
    }
    if (m.type === 'ship-batch') this.open.batches.set(id, m);
    this.answered(id);
  }

  start(): this {
    this.loop.start(this.opts.intervalMs);
    return this;
  }

  /** Stops starting rounds; resolves once the round in flight has answered its threads. */
  async stop(): Promise<void> {
    await this.loop.stop();
  }

  private answered(id: number): void {
    if (this.open?.waiting.delete(id) && this.open.waiting.size === 0) this.open.end();
  }

  /** One round; returns the delay before the next (counted from this one's start, like a shipper's). */
  private async tick(signal: AbortSignal): Promise<number> {
    const started = performance.now();
    const round = ++this.round;
    const waiting = new Set(this.members.keys());
    const batches = new Map<number, Extract<RoundReply, { type: 'ship-batch' }>>();
    if (waiting.size > 0 && !signal.aborted) {
      let end!: () => void;
      const collected = new Promise<void>((resolve) => (end = resolve));
      this.open = { waiting, batches, end };
      // Removed when the round ends: the loop's signal lives until close, and a listener left on it
      // per round kept every round's batches (their RowBinary) reachable, ~130 B per event shipped.
      signal.addEventListener('abort', end, { once: true });
      for (const id of waiting) this.members.get(id)!({ type: 'ship-round', round });
      try {
        await collected;
      } finally {
        signal.removeEventListener('abort', end);
        this.open = undefined;
      }
    }
    if (batches.size === 0) return Math.max(0, this.opts.intervalMs - (performance.now() - started));
    const outcome = signal.aborted ? { error: 'ingest is stopping' } : await this.ship([...batches.values()]);
    let first = true;
    for (const id of batches.keys()) {
      // One thread reports the insert's time, so that the ship histogram counts inserts, not batches.
      this.members.get(id)?.({
        type: 'ship-result',
        round,
        ...outcome,
        ...(first ? {} : { insertSeconds: undefined }),
      });
      first = false;
    }
    if (outcome.error !== undefined) {
      this.failures++;
      return Math.min(MAX_BACKOFF_MS, 100 * 2 ** this.failures);
    }
    this.failures = 0;
    this.opts.onShipped?.();
    if ([...batches.values()].some((b) => b.full)) return 0;
    return Math.max(0, this.opts.intervalMs - (performance.now() - started));
  }

  /** The events first, then the record, as a thread alone does (the aggregator reads the record). */
  private async ship(batches: readonly Extract<RoundReply, { type: 'ship-batch' }>[]): Promise<Outcome> {
    const t0 = performance.now();
    try {
      await this.opts.insertEvents(Buffer.concat(batches.map((b) => b.events)));
      await this.opts.record({
        partials: batches.flatMap((b) => b.record.partials),
        windows: batches.flatMap((b) => b.record.windows),
        meters: batches.flatMap((b) => b.record.meters ?? []),
      });
      return { insertSeconds: (performance.now() - t0) / 1000 };
    } catch (err) {
      // Each thread logs its own failure streak (SpoolShipper); a refused row is found by each alone.
      return { error: (err as Error).message, rejected: rowRejectionCode(err) !== undefined };
    }
  }
}

/** An ingest thread's side: answers the rounds with its shipper's next batch. */
export class RoundShipping {
  private round: number | undefined;
  private answered = false;
  private outcome: ((o: Outcome) => void) | undefined;

  constructor(
    private readonly post: (m: RoundReply) => void,
    private readonly batchRows: number,
  ) {}

  receive(m: RoundRequest, shipper: SpoolShipper): void {
    if (m.type === 'ship-result') {
      if (m.round === this.round) this.outcome?.(m);
      return;
    }
    // Still busy with an earlier round (a batch shipped alone, bisecting): nothing for this one.
    if (this.round !== undefined) return this.post({ type: 'ship-none', round: m.round });
    this.round = m.round;
    this.answered = false;
    void shipper.shipInRound().finally(() => {
      if (!this.answered) this.post({ type: 'ship-none', round: m.round });
      this.round = undefined;
      this.outcome = undefined;
    });
  }

  /** The shipper's ShipTogether: hands the batch to the open round and waits for its outcome. */
  readonly together: ShipTogether = async (rows: readonly ParsedLine[], record: BatchRecord) => {
    const round = this.round;
    if (round === undefined || this.answered) return { alone: true };
    let events: Buffer;
    try {
      events = parsedRowsToRowBinary(rows);
    } catch {
      // A line that cannot be encoded: the thread ships alone, which quarantines it.
      this.answered = true;
      this.post({ type: 'ship-none', round });
      return { alone: true };
    }
    const outcome = new Promise<Outcome>((resolve) => (this.outcome = resolve));
    this.answered = true;
    this.post({ type: 'ship-batch', round, events, record, full: rows.length >= this.batchRows });
    const o = await outcome;
    if (o.error === undefined) return { alone: false, insertSeconds: o.insertSeconds };
    if (o.rejected === true) return { alone: true };
    throw new ClickHouseQueryError("shipping in the ingest process's ship round", new Error(o.error));
  };
}
