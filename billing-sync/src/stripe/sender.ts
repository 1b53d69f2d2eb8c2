import type Stripe from 'stripe';
import { type Logger } from '@meterd/core/log';
import { type Pool } from '@meterd/core/store';
import type { BillingConfig } from '../config.js';
import type { Outcome, PushRow } from '../ledger.js';
import type { BillingMetrics } from '../metrics.js';
import { MeterEventSession } from './session.js';
import { Pacer } from './pacer.js';
import { backoffMs, classify, selfCheckedCause, sleep, type SelfCheckedCause, type Verdict } from './retry.js';
import { streamHost } from './client.js';
import { ResendCheck } from './resend.js';
import { STRIPE_MAX_AGE_S } from '../horizon.js';

const STREAM_MAX = 100;
const SESSION_RENEWALS = 3;

type Failed = { ok: false; verdict: Verdict; error: string; cause: SelfCheckedCause | undefined };
type Attempt<T> = { ok: true; value: T } | Failed;

const failed = (err: unknown): Failed => ({
  ok: false,
  verdict: classify(err),
  error: (err as Error).message,
  cause: selfCheckedCause(err),
});

/**
 * Sends ledger rows to Stripe and says what happened to each. The v2 stream carries the volume
 * (one call per ≤100 events); rows the stream refuses outright go through v1 one by one, where
 * Stripe validates synchronously and the refusal lands on the one bad row. Retries (429, 5xx,
 * timeouts) back off with jitter and obey Stripe-Should-Retry; a row still failing after
 * STRIPE_MAX_ATTEMPTS stays pending for the next pass.
 */
export class StripeSender {
  private readonly session: MeterEventSession;
  private readonly host: string;
  private readonly streamPacer: Pacer;
  private readonly v1Pacer: Pacer;
  /** Paces every Stripe call other than meter events (sessions, adjustments, summaries, customers). */
  readonly apiPacer: Pacer;
  private readonly resend: ResendCheck;

  constructor(
    private readonly stripe: Stripe,
    private readonly pool: Pool,
    private readonly cfg: BillingConfig,
    private readonly metrics: BillingMetrics,
    private readonly log: Logger,
  ) {
    this.apiPacer = new Pacer(cfg.STRIPE_API_RATE);
    this.streamPacer = new Pacer(cfg.STRIPE_STREAM_RATE);
    this.v1Pacer = new Pacer(cfg.STRIPE_V1_RATE);
    this.session = new MeterEventSession(stripe, this.apiPacer);
    this.host = streamHost(cfg);
    this.resend = new ResendCheck(stripe, pool, this.apiPacer, metrics, log);
  }

  /**
   * Sends claimed rows. Before anything is sent: a row whose window Stripe no longer accepts is
   * unbillable; a row without an active meter (`meters`: event_name → meter id) is rejected with
   * `no_meter` (the worker retries it once the meter exists); rows planned more than
   * STRIPE_RESEND_CHECK_HOURS ago are checked against Stripe's summaries (`resend.ts`), since
   * Stripe may have forgotten their identifiers.
   */
  async push(rows: PushRow[], nowS: number, meters: ReadonlyMap<string, string>): Promise<Outcome[]> {
    const outcomes: Outcome[] = [];
    const staleBefore = nowS - this.cfg.STRIPE_RESEND_CHECK_HOURS * 3_600;
    const fresh: PushRow[] = [];
    const stale: PushRow[] = [];
    for (const row of rows) {
      if (row.window_start < nowS - STRIPE_MAX_AGE_S) {
        this.metrics.unbillable.inc();
        outcomes.push({
          identifier: row.identifier,
          status: 'unbillable',
          reason: `window older than the 35 days Stripe accepts when it was due to be sent: ${row.value} not billed`,
        });
      } else if (!meters.has(row.event_name)) {
        this.metrics.rejected.inc();
        this.log.error(
          { identifier: row.identifier, event_name: row.event_name },
          'no active Stripe meter for this event name (currency): the row waits until one exists',
        );
        outcomes.push({
          identifier: row.identifier,
          status: 'rejected',
          reason: `no_meter: no active Stripe meter has event_name ${row.event_name}`,
        });
      } else if (row.planned_at < staleBefore) {
        // Planned, not first attempted: a process killed (or a COMMIT failed) after Stripe accepted
        // the row leaves no trace of the attempt, and any attempt may have been the first.
        stale.push(row);
      } else {
        fresh.push(row);
      }
    }
    const ready: PushRow[] = [];
    if (stale.length > 0) {
      const checked = await this.resend.check(stale, meters, staleBefore);
      outcomes.push(...checked.outcomes);
      ready.push(...checked.send);
    }
    for (const row of fresh) {
      const cancelled = await this.cancelPrior(row);
      if (cancelled !== undefined) outcomes.push(cancelled);
      else if (row.value === 0n)
        outcomes.push({ identifier: row.identifier, status: 'sent', via: 'v1', response: { cancelled: row.cancels } });
      else ready.push(row);
    }
    if (this.cfg.STRIPE_TRANSPORT === 'v1') return outcomes.concat(await this.sendV1(ready));
    for (let i = 0; i < ready.length; i += STREAM_MAX)
      outcomes.push(...(await this.sendStream(ready.slice(i, i + STREAM_MAX))));
    return outcomes;
  }

  /**
   * Rows planned before refunds were sent as negative values (006) may carry cancels of earlier
   * revisions; they cancel those first. Undefined when all are cancelled.
   */
  private async cancelPrior(row: PushRow): Promise<Outcome | undefined> {
    for (const identifier of row.cancels) {
      const r = await this.withRetries(this.apiPacer, () =>
        this.stripe.billing.meterEventAdjustments.create({
          event_name: row.event_name,
          type: 'cancel',
          cancel: { identifier },
        }),
      );
      if (r.ok || r.verdict.kind === 'already_cancelled') continue;
      // Stripe does not know the identifier: nothing of it is counted, so nothing needs cancelling.
      if (r.verdict.kind === 'permanent' && /no such meter event/i.test(r.error)) continue;
      return this.failure(row, r);
    }
    return undefined;
  }

  private async sendStream(rows: PushRow[]): Promise<Outcome[]> {
    const events = rows.map((r) => ({
      event_name: r.event_name,
      identifier: r.identifier,
      timestamp: new Date(r.window_start * 1000).toISOString(),
      payload: payloadOf(r),
    }));
    let renewals = 0;
    for (;;) {
      let token: string;
      try {
        token = await this.session.get();
      } catch (err) {
        const r = failed(err);
        if (r.verdict.kind === 'permanent') return this.sendV1(rows);
        return rows.map((row) => this.failure(row, r));
      }
      const r = await this.withRetries(this.streamPacer, () =>
        this.stripe.v2.billing.meterEventStream.create({ events }, { apiKey: token, host: this.host }),
      );
      if (r.ok) {
        this.metrics.eventsSent.inc(rows.length);
        this.metrics.streamCalls.inc();
        return rows.map((row) => ({
          identifier: row.identifier,
          status: 'sent',
          via: 'v2_stream',
          response: { accepted: true },
        }));
      }
      if (r.verdict.kind === 'session_expired' && renewals++ < SESSION_RENEWALS) {
        this.metrics.sessionRenewals.inc();
        this.session.invalidate(token);
        continue;
      }
      if (r.verdict.kind === 'permanent') {
        this.log.warn(
          { error: r.error, events: rows.length },
          'the meter event stream refused a batch; sending its events through v1 one by one',
        );
        return this.sendV1(rows);
      }
      return rows.map((row) => this.failure(row, r));
    }
  }

  /**
   * v1, one call per event. Stripe allows one concurrent call per customer per meter, so events of
   * one (customer, event name) go one after another; different pairs run side by side.
   */
  private async sendV1(rows: PushRow[]): Promise<Outcome[]> {
    const groups = new Map<string, PushRow[]>();
    for (const r of rows) {
      const k = `${r.stripe_customer_id}\n${r.event_name}`;
      const g = groups.get(k);
      if (g) g.push(r);
      else groups.set(k, [r]);
    }
    const out: Outcome[] = [];
    const queue = [...groups.values()];
    const worker = async (): Promise<void> => {
      for (let g = queue.shift(); g !== undefined; g = queue.shift()) {
        for (const row of g) out.push(await this.sendOneV1(row));
      }
    };
    await Promise.all(Array.from({ length: Math.min(8, queue.length) }, worker));
    return out;
  }

  private async sendOneV1(row: PushRow): Promise<Outcome> {
    const r = await this.withRetries(this.v1Pacer, () =>
      this.stripe.billing.meterEvents.create({
        event_name: row.event_name,
        identifier: row.identifier,
        timestamp: row.window_start,
        payload: payloadOf(row),
      }),
    );
    if (r.ok) {
      this.metrics.eventsSent.inc();
      return { identifier: row.identifier, status: 'sent', via: 'v1', response: { created: r.value.created } };
    }
    if (r.verdict.kind === 'duplicate') {
      this.metrics.duplicates.inc();
      return { identifier: row.identifier, status: 'sent', via: 'v1', response: { duplicate: true, message: r.error } };
    }
    return this.failure(row, r);
  }

  /**
   * A refusal naming a missing customer or meter rejects the row with Stripe's code: it does not
   * count as billed, holds its key, and is retried once the cause is fixed (worker.ts). Any other
   * permanent refusal fails the row (held and listed the same way, retried by an operator).
   */
  private failure(row: PushRow, r: Failed): Outcome {
    if (r.verdict.kind === 'permanent' && r.cause !== undefined) {
      this.metrics.rejected.inc();
      this.log.error(
        { identifier: row.identifier, cause: r.cause, error: r.error },
        'Stripe refused a meter event for a missing customer or meter: the row waits until it exists',
      );
      return { identifier: row.identifier, status: 'rejected', reason: `${r.cause}: ${r.error}` };
    }
    if (r.verdict.kind === 'permanent') {
      this.metrics.failures.inc();
      this.log.error({ identifier: row.identifier, error: r.error }, 'Stripe refused a meter event for good');
      return { identifier: row.identifier, status: 'failed', error: r.error, response: null };
    }
    return {
      identifier: row.identifier,
      status: 'retry',
      error: r.error,
      delayMs:
        Math.round(backoffMs(row.attempts + 1, this.cfg.STRIPE_RETRY_BASE_MS, this.cfg.STRIPE_RETRY_MAX_MS)) + 1_000,
    };
  }

  /** Runs `call` paced, retrying what is retryable; duplicates, expiries and permanent errors return at once. */
  private async withRetries<T>(pacer: Pacer, call: () => Promise<T>): Promise<Attempt<T>> {
    let last: Failed = { ok: false, verdict: { kind: 'retry' }, error: 'not attempted', cause: undefined };
    for (let attempt = 0; attempt < this.cfg.STRIPE_MAX_ATTEMPTS; attempt++) {
      if (attempt > 0) {
        this.metrics.retries.inc();
        await sleep(backoffMs(attempt, this.cfg.STRIPE_RETRY_BASE_MS, this.cfg.STRIPE_RETRY_MAX_MS));
      }
      await pacer.take();
      try {
        return { ok: true, value: await call() };
      } catch (err) {
        last = failed(err);
        if ((err as { statusCode?: number }).statusCode === 429) this.metrics.rateLimited.inc();
        if (last.verdict.kind !== 'retry') return last;
      }
    }
    return last;
  }
}

/**
 * A row's meter event payload: the customer, the value and, for a meter with group_by, its
 * dimensions (the Stripe meter's dimension_payload_keys; core's stripeBillingProblem keeps them
 * off the two keys billing-sync sets, so they come first and can never overwrite them).
 */
export function payloadOf(row: PushRow): Record<string, string> {
  return { ...row.dimensions, stripe_customer_id: row.stripe_customer_id, value: row.value.toString() };
}
