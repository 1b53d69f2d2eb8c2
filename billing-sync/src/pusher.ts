import { type Pool } from '@meterd/core/store';
import { claimPending, recordOutcomes, type Outcome, type PushRow } from './ledger.js';

export type Send = (rows: PushRow[]) => Promise<Outcome[]>;

/**
 * Drains the pending rows: each batch is claimed with FOR UPDATE SKIP LOCKED inside a transaction
 * that stays open while Stripe is called and commits with the outcomes. Replicas take different
 * rows; if this process dies mid-call, the transaction rolls back, the rows are pending again, and
 * the next attempt re-sends the same identifiers, which Stripe deduplicates.
 */
export async function drain(
  pool: Pool,
  send: Send,
  batchSize: number,
  concurrency: number,
  nowS: number,
  stopping: () => boolean,
): Promise<number> {
  let sent = 0;
  // One lane failing stops the others, and drain returns only once every lane has finished: a
  // lane still running after the pass gave up would claim the failed lane's rolled-back rows and
  // send them behind the caller's back.
  let failed = false;
  const lane = async (): Promise<void> => {
    while (!stopping() && !failed) {
      const c = await pool.connect();
      let n: number;
      try {
        await c.query('BEGIN');
        const rows = await claimPending(c, batchSize, nowS);
        n = rows.length;
        if (n > 0) await recordOutcomes(c, await send(rows), nowS);
        await c.query('COMMIT');
      } catch (err) {
        failed = true;
        // The connection may be what failed; the original error is the one to report.
        await c.query('ROLLBACK').catch(() => {});
        throw err;
      } finally {
        c.release();
      }
      if (n === 0) return;
      sent += n;
    }
  };
  const outcomes = await Promise.allSettled(Array.from({ length: concurrency }, lane));
  const failure = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
  if (failure !== undefined) throw failure.reason;
  return sent;
}
