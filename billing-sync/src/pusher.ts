import { randomUUID } from 'node:crypto';
import { inTransaction, type Pool } from '@meterd/core/store';
import { claimPending, recordOutcomes, releaseClaim, type Outcome, type PushRow } from './ledger.js';

export type Send = (rows: PushRow[]) => Promise<Outcome[]>;

/**
 * Drains the pending rows: each batch is claimed by a lease (a token and an expiry, committed at
 * once), sent to Stripe with no transaction open, and its outcomes are recorded in a short
 * transaction that only touches rows still under this claim. Replicas take different rows. If this
 * process dies mid-call, the lease expires (`leaseMs`), another replica claims the rows and re-sends
 * the same identifiers, which Stripe deduplicates; a send that fails outright gives its rows back
 * at once.
 */
export async function drain(
  pool: Pool,
  send: Send,
  batchSize: number,
  concurrency: number,
  nowS: number,
  leaseMs: number,
  stopping: () => boolean,
): Promise<number> {
  let sent = 0;
  // One lane failing stops the others, and drain returns only once every lane has finished: a
  // lane still running after the pass gave up would claim the failed lane's released rows and
  // send them behind the caller's back.
  let failed = false;
  const lane = async (): Promise<void> => {
    while (!stopping() && !failed) {
      const token = randomUUID();
      const rows = await claimPending(pool, batchSize, nowS, { token, leaseMs });
      if (rows.length === 0) return;
      try {
        const outcomes = await send(rows);
        await inTransaction(pool, (c) => recordOutcomes(c, outcomes, nowS, token));
      } catch (err) {
        failed = true;
        // The original error is the one to report; rows not given back wait out their lease.
        await releaseClaim(pool, token).catch(() => {});
        throw err;
      }
      sent += rows.length;
    }
  };
  const outcomes = await Promise.allSettled(Array.from({ length: concurrency }, lane));
  const failure = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
  if (failure !== undefined) throw failure.reason;
  return sent;
}
