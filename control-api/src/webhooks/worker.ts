import pg from 'pg';
import { type Logger } from '@meterd/core/log';
import { type Pool } from '@meterd/core/store';
import { inTransaction } from '@meterd/core/store';
import type { SecretBox } from '../crypto/secret-box.js';
import { OUTBOX_CHANNEL } from './outbox.js';
import { postWebhook, type SendResult } from './send.js';
import { signatureHeader } from './signature.js';
import type { ControlMetrics } from '../metrics.js';

/** docs/api.md's schedule: after a failed first attempt, up to 4 retries after 0 s, 1 s, 3 s and 10 s. */
export const RETRY_DELAYS_S: readonly number[] = [0, 1, 3, 10];
export const MAX_ATTEMPTS = 1 + RETRY_DELAYS_S.length;
/** Consecutive deliveries that exhausted their retries before an endpoint is disabled (Stripe's rule). */
export const DISABLE_AFTER_EXHAUSTED = 5;

export interface WorkerOptions {
  pool: Pool;
  /** Where the LISTEN connection goes: a server session (DATABASE_SESSION_URL), not PgBouncer's transaction mode. */
  databaseUrl: URL;
  box: SecretBox;
  log: Logger;
  metrics: ControlMetrics;
  retryScale: number;
  pollMs: number;
  /** Total deadline of one attempt (connect, headers and body). */
  timeoutMs: number;
  allowPrivate: boolean;
  /** Attempts in flight at once in this process, over all endpoints (at most one per endpoint). */
  concurrency: number;
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
 *
 * Isolation: an endpoint has at most one attempt in flight (here, and across replicas through the
 * live lease), each attempt is bounded by a total deadline, and every attempt runs on its own in a
 * pool of `concurrency` slots: a finished attempt frees its slot and claims the next due delivery
 * at once. A slow receiver therefore holds one slot and delays only its own deliveries.
 */
export class DeliveryWorker {
  private timer: NodeJS.Timeout | undefined;
  private listener: pg.Client | undefined;
  private claiming: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  /** Endpoints with an attempt in flight in this process. */
  private readonly busy = new Set<string>();
  private readonly inflight = new Set<Promise<void>>();
  private readonly leaseSeconds: number;

  constructor(private readonly o: WorkerOptions) {
    // Longer than an attempt can take (its deadline) plus recording its outcome; short, so that the
    // attempt of a worker that died mid-send is taken over within seconds.
    this.leaseSeconds = Math.ceil(o.timeoutMs / 1000) + 5;
  }

  async start(): Promise<void> {
    this.timer = setInterval(() => this.wake(), this.o.pollMs);
    await this.listen();
    this.wake();
  }

  /** Fills free slots now, or right after the claim in progress. */
  wake(): void {
    if (this.stopped) return;
    if (this.claiming) {
      this.again = true;
      return;
    }
    this.claiming = this.fill().finally(() => {
      this.claiming = undefined;
    });
  }

  /** Stops claiming and waits for the attempts in flight (each ends by its deadline). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.listener?.end().catch(() => {});
    await this.claiming;
    await Promise.allSettled([...this.inflight]);
  }

  private async listen(): Promise<void> {
    if (this.stopped) return;
    // keepAlive: a LISTEN connection only ever reads; without it a silently dropped one would wait forever.
    const c = new pg.Client({ connectionString: this.o.databaseUrl.toString(), keepAlive: true });
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

  private async fill(): Promise<void> {
    do {
      this.again = false;
      try {
        while (!this.stopped && this.free() > 0 && (await this.claim(this.free())) > 0);
      } catch (err) {
        this.o.log.error({ err }, 'claiming webhook deliveries failed');
      }
    } while (this.again && !this.stopped);
  }

  private free(): number {
    return this.o.concurrency - this.inflight.size;
  }

  /**
   * Claims up to `n` due deliveries, at most one per endpoint and none for an endpoint with an
   * attempt in flight, and starts each. Returns how many it started.
   */
  private async claim(n: number): Promise<number> {
    const { rows } = await this.o.pool.query<Claimed>(
      `WITH due AS (
         SELECT d.id, d.endpoint_id, d.next_attempt_at, d.created_at FROM webhook_deliveries d
          WHERE ((d.status = 'pending' AND d.next_attempt_at <= now()) OR (d.status = 'delivering' AND d.lease_until < now()))
            AND d.endpoint_id <> ALL ($3::text[])
            AND NOT EXISTS (SELECT 1 FROM webhook_deliveries x
                             WHERE x.endpoint_id = d.endpoint_id AND x.status = 'delivering' AND x.lease_until >= now())
          ORDER BY d.next_attempt_at
          LIMIT $1 * 4
          FOR UPDATE SKIP LOCKED),
       first_per_endpoint AS (
         SELECT DISTINCT ON (endpoint_id) id, next_attempt_at FROM due ORDER BY endpoint_id, next_attempt_at, created_at),
       picked AS (SELECT id FROM first_per_endpoint ORDER BY next_attempt_at LIMIT $1)
       UPDATE webhook_deliveries d
          SET status = 'delivering', attempts = d.attempts + 1, lease_until = now() + make_interval(secs => $2)
         FROM picked, outbox_events e, webhook_endpoints w
        WHERE d.id = picked.id AND e.id = d.event_id AND w.id = d.endpoint_id
       RETURNING d.id, d.attempts, d.event_id, e.event, e.body, w.url, w.secret_enc, w.id AS endpoint_id, w.status AS endpoint_status`,
      [n, this.leaseSeconds, [...this.busy]],
    );
    for (const d of rows) this.start1(d);
    return rows.length;
  }

  /** Runs one attempt in its own slot; when it ends, the slot and the endpoint are free again. */
  private start1(d: Claimed): void {
    this.busy.add(d.endpoint_id);
    const p = this.deliver(d)
      .catch((err: unknown) =>
        this.o.log.error({ err, delivery: d.id }, 'webhook delivery failed; its lease expires and it is retried'),
      )
      .finally(() => {
        this.inflight.delete(p);
        this.busy.delete(d.endpoint_id);
        this.wake();
      });
    this.inflight.add(p);
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
      await c.query(
        'INSERT INTO webhook_attempts (delivery_id, attempt, status_code, latency_ms, error) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING',
        [d.id, d.attempts, res.status, res.latencyMs, res.error],
      );
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
        await c.query(
          'UPDATE webhook_endpoints SET consecutive_failures = 0 WHERE id = $1 AND consecutive_failures <> 0',
          [d.endpoint_id],
        );
      } else if (exhausted) {
        const { rows } = await c.query<{ status: string }>(
          `UPDATE webhook_endpoints
              SET consecutive_failures = consecutive_failures + 1,
                  status = CASE WHEN consecutive_failures + 1 >= $2 THEN 'disabled' ELSE status END,
                  disabled_at = CASE WHEN consecutive_failures + 1 >= $2 AND status = 'active' THEN now() ELSE disabled_at END
            WHERE id = $1 RETURNING status`,
          [d.endpoint_id, DISABLE_AFTER_EXHAUSTED],
        );
        if (rows[0]?.status === 'disabled')
          this.o.log.warn(
            { endpoint: d.endpoint_id },
            'webhook endpoint disabled after consecutive exhausted deliveries',
          );
      }
    });
  }
}
