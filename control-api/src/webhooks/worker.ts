import pg from 'pg';
import type { Logger, Pool } from '@meterd/core';
import { inTransaction } from '@meterd/core';
import type { SecretBox } from '../crypto/secret-box.js';
import { OUTBOX_CHANNEL } from './outbox.js';
import { postWebhook, type SendResult } from './send.js';
import { signatureHeader } from './signature.js';
import type { ControlMetrics } from '../metrics.js';

/** The seed's schedule: after a failed first attempt, up to 4 retries after 0 s, 1 s, 3 s and 10 s. */
export const RETRY_DELAYS_S: readonly number[] = [0, 1, 3, 10];
export const MAX_ATTEMPTS = 1 + RETRY_DELAYS_S.length;
/** Consecutive deliveries that exhausted their retries before an endpoint is disabled (Stripe's rule). */
export const DISABLE_AFTER_EXHAUSTED = 5;

export interface WorkerOptions {
  pool: Pool;
  databaseUrl: URL;
  box: SecretBox;
  log: Logger;
  metrics: ControlMetrics;
  retryScale: number;
  pollMs: number;
  timeoutMs: number;
  allowPrivate: boolean;
  /** Deliveries claimed per round. */
  batch?: number;
}

interface Claimed {
  id: string;
  attempts: number;
  event_id: string;
  event: string;
  body: string;
  url: string;
  secret_enc: string;
  endpoint_id: string;
  endpoint_status: string;
}

/**
 * Sends outbox deliveries. Rows are claimed with FOR UPDATE SKIP LOCKED and a lease, so several
 * control-api replicas share the work without sending an attempt twice, and a worker that dies
 * mid-send leaves a lease that expires and is taken again (the receiver dedupes by
 * StateSet-Event-Id). Woken by NOTIFY when an emitting transaction commits; polls as a fallback.
 */
export class DeliveryWorker {
  private timer: NodeJS.Timeout | undefined;
  private listener: pg.Client | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private readonly batch: number;
  private readonly leaseSeconds: number;

  constructor(private readonly o: WorkerOptions) {
    this.batch = o.batch ?? 20;
    // Long enough to send (bounded by the timeout) and record the outcome; short, so that the
    // attempt of a worker that died mid-send is taken over within seconds.
    this.leaseSeconds = Math.ceil(o.timeoutMs / 1000) + 5;
  }

  async start(): Promise<void> {
    this.timer = setInterval(() => this.wake(), this.o.pollMs);
    await this.listen();
    this.wake();
  }

  /** Runs a round now, or right after the current one. */
  wake(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.loop().finally(() => {
      this.running = undefined;
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.listener?.end().catch(() => {});
    await this.running;
  }

  private async listen(): Promise<void> {
    if (this.stopped) return;
    const c = new pg.Client({ connectionString: this.o.databaseUrl.toString() });
    c.on('error', (err) => {
      this.o.log.warn({ err }, 'outbox LISTEN connection lost; polling until it is back');
      this.listener = undefined;
      if (!this.stopped) setTimeout(() => void this.listen().catch(() => {}), 1_000).unref();
    });
    c.on('notification', () => this.wake());
    try {
      await c.connect();
      await c.query(`LISTEN ${OUTBOX_CHANNEL}`);
      // stop() may have run while this connected: it could not end a client it did not see yet.
      if (this.stopped) {
        await c.end();
        return;
      }
      this.listener = c;
    } catch (err) {
      this.o.log.warn({ err }, 'could not LISTEN for outbox events; polling only');
      await c.end().catch(() => {});
    }
  }

  private async loop(): Promise<void> {
    do {
      this.again = false;
      try {
        let n: number;
        do n = await this.round();
        while (n === this.batch && !this.stopped);
      } catch (err) {
        this.o.log.error({ err }, 'webhook delivery round failed');
      }
    } while (this.again && !this.stopped);
  }

  /** Claims due deliveries, sends them concurrently, records each outcome. Returns how many it claimed. */
  async round(): Promise<number> {
    const { rows } = await this.o.pool.query<Claimed>(
      `WITH due AS (
         SELECT id FROM webhook_deliveries
          WHERE (status = 'pending' AND next_attempt_at <= now()) OR (status = 'delivering' AND lease_until < now())
          ORDER BY next_attempt_at
          LIMIT $1
          FOR UPDATE SKIP LOCKED)
       UPDATE webhook_deliveries d
          SET status = 'delivering', attempts = d.attempts + 1, lease_until = now() + make_interval(secs => $2)
         FROM due, outbox_events e, webhook_endpoints w
        WHERE d.id = due.id AND e.id = d.event_id AND w.id = d.endpoint_id
       RETURNING d.id, d.attempts, d.event_id, e.event, e.body, w.url, w.secret_enc, w.id AS endpoint_id, w.status AS endpoint_status`,
      [this.batch, this.leaseSeconds],
    );
    await Promise.all(rows.map((r) => this.deliver(r)));
    return rows.length;
  }

  private async deliver(d: Claimed): Promise<void> {
    if (d.endpoint_status !== 'active' || d.attempts > MAX_ATTEMPTS) {
      await this.o.pool.query(
        `UPDATE webhook_deliveries SET status = 'failed', completed_at = now(), lease_until = NULL, attempts = LEAST(attempts, $2), last_error = $3 WHERE id = $1`,
        [d.id, MAX_ATTEMPTS, d.endpoint_status !== 'active' ? 'endpoint disabled' : 'retries exhausted'],
      );
      return;
    }
    const secret = this.o.box.open(d.secret_enc);
    const headers = {
      'StateSet-Event': d.event,
      'StateSet-Event-Id': d.event_id,
      'StateSet-Signature': signatureHeader(secret, d.body, Math.floor(Date.now() / 1000)),
      'StateSet-Delivery-Attempt': String(d.attempts),
    };
    const res = await postWebhook(d.url, d.body, headers, this.o.timeoutMs, this.o.allowPrivate);
    this.o.metrics.webhookLatency.observe(res.latencyMs / 1000);
    await this.record(d, res);
  }

  private async record(d: Claimed, res: SendResult): Promise<void> {
    const ok = res.status !== null && res.status >= 200 && res.status < 300;
    const permanent = res.status !== null && res.status >= 400 && res.status < 500;
    const exhausted = !ok && !permanent && d.attempts >= MAX_ATTEMPTS;
    const outcome = ok ? 'succeeded' : permanent || exhausted ? 'failed' : 'retry';
    this.o.metrics.webhookAttempts[outcome].inc();
    await inTransaction(this.o.pool, async (c) => {
      await c.query('INSERT INTO webhook_attempts (delivery_id, attempt, status_code, latency_ms, error) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING', [
        d.id, d.attempts, res.status, res.latencyMs, res.error,
      ]);
      if (outcome === 'retry') {
        const delayMs = Math.round(RETRY_DELAYS_S[d.attempts - 1]! * 1000 * this.o.retryScale);
        await c.query(
          `UPDATE webhook_deliveries SET status = 'pending', lease_until = NULL, next_attempt_at = now() + make_interval(secs => $2),
                  last_status_code = $3, last_latency_ms = $4, last_error = $5 WHERE id = $1`,
          [d.id, delayMs / 1000, res.status, res.latencyMs, res.error],
        );
        if (delayMs <= this.o.pollMs) setTimeout(() => this.wake(), delayMs).unref();
        return;
      }
      await c.query(
        `UPDATE webhook_deliveries SET status = $2, lease_until = NULL, completed_at = now(),
                last_status_code = $3, last_latency_ms = $4, last_error = $5 WHERE id = $1`,
        [d.id, ok ? 'succeeded' : 'failed', res.status, res.latencyMs, res.error],
      );
      if (ok) {
        await c.query('UPDATE webhook_endpoints SET consecutive_failures = 0 WHERE id = $1 AND consecutive_failures <> 0', [d.endpoint_id]);
      } else if (exhausted) {
        const { rows } = await c.query<{ status: string }>(
          `UPDATE webhook_endpoints
              SET consecutive_failures = consecutive_failures + 1,
                  status = CASE WHEN consecutive_failures + 1 >= $2 THEN 'disabled' ELSE status END,
                  disabled_at = CASE WHEN consecutive_failures + 1 >= $2 AND status = 'active' THEN now() ELSE disabled_at END
            WHERE id = $1 RETURNING status`,
          [d.endpoint_id, DISABLE_AFTER_EXHAUSTED],
        );
        if (rows[0]?.status === 'disabled') this.o.log.warn({ endpoint: d.endpoint_id }, 'webhook endpoint disabled after consecutive exhausted deliveries');
      }
    });
  }
}
