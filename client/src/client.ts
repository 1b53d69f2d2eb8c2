import { randomUUID } from 'node:crypto';
import { ClientClosedError, MeterdRequestError, QuotaExhaustedError } from './errors.js';
import { backoffMs, errorCode, retryAfterMs, retryableAnswer, retryableCode, sleep } from './retry.js';
import { Transport, type Answer } from './transport.js';
import type { ClientOptions, MeterEvent, MeterResult, Quota } from './types.js';

/** An event ready to send (defaults filled once, so every retry sends the same bytes) and who waits for it. */
interface Pending {
  json: string;
  key: string;
  resolve: (r: MeterResult) => void;
  reject: (e: Error) => void;
}

type BatchItem = { index: number; status: number; id?: string; duplicate?: boolean; error?: WireError };
interface WireError {
  code: string;
  message: string;
  field?: string;
}

const MAX_BATCH = 100;

/**
 * A client for meterd's ingest API. `meter()` queues an event and resolves with ingest's answer
 * for it; queued events go out in batches of `batchSize`, or after `flushIntervalMs`, at most
 * `concurrency` requests at a time. A request that fails with 503, 409 idempotency_key_in_use or a
 * network error is sent again unchanged (same idempotency keys, so ingest counts each event once)
 * after a jittered backoff that honours Retry-After. `close()` sends everything queued first.
 */
export class MeterdClient {
  private readonly o: Required<Omit<ClientOptions, 'onQuota' | 'onRetry'>> & Pick<ClientOptions, 'onQuota' | 'onRetry'>;
  private readonly transport: Transport;
  private queue: Pending[] = [];
  private inflight = 0;
  private readonly sending = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  private spaceWaiters: (() => void)[] = [];
  private closed = false;
  private exhaustedUntil = 0;
  private readonly onSignal: ((signal: NodeJS.Signals) => void) | undefined;
  /** The latest quota headers, or null before the first answer. */
  quota: Quota | null = null;

  constructor(options: ClientOptions) {
    this.o = {
      batchSize: 100,
      flushIntervalMs: 20,
      concurrency: 8,
      maxQueued: 10_000,
      maxAttempts: 10,
      retryBaseMs: 100,
      retryMaxMs: 10_000,
      timeoutMs: 10_000,
      quotaBackpressure: false,
      quotaProbeMs: 60_000,
      flushOnSignals: false,
      ...options,
    };
    const o = this.o;
    if (!Number.isInteger(o.batchSize) || o.batchSize < 1 || o.batchSize > MAX_BATCH)
      throw new RangeError(`batchSize must be 1–${MAX_BATCH}`);
    if (!Number.isInteger(o.concurrency) || o.concurrency < 1) throw new RangeError('concurrency must be ≥ 1');
    if (!Number.isInteger(o.maxAttempts) || o.maxAttempts < 1) throw new RangeError('maxAttempts must be ≥ 1');
    this.transport = new Transport(o.baseUrl, o.apiKey, o.concurrency + 1, o.timeoutMs);
    if (o.flushOnSignals) {
      this.onSignal = (signal) => {
        void this.close().finally(() => {
          // With our listener gone and no other, the signal's default (exit) applies again.
          if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
        });
      };
      process.once('SIGTERM', this.onSignal);
      process.once('SIGINT', this.onSignal);
    }
  }

  /** Queues one event for the next batch; resolves with ingest's answer for it. Waits while the queue is full. */
  async meter(event: MeterEvent): Promise<MeterResult> {
    this.admit();
    while (this.queue.length >= this.o.maxQueued) {
      await new Promise<void>((r) => this.spaceWaiters.push(r));
      this.admit();
    }
    const { json, key } = this.prepare(event);
    const p = new Promise<MeterResult>((resolve, reject) => this.queue.push({ json, key, resolve, reject }));
    if (this.queue.length >= this.o.batchSize) this.pump(false);
    else this.timer ??= setTimeout(() => this.onTimer(), this.o.flushIntervalMs);
    return p;
  }

  /** One event, sent at once on its own request (POST /api/v1/meter), with the same retries. */
  async meterNow(event: MeterEvent): Promise<MeterResult> {
    this.admit();
    const { json, key } = this.prepare(event);
    const a = await this.send('/api/v1/meter', json);
    const body = JSON.parse(a.body) as { id?: string; duplicate?: boolean; error?: WireError };
    if (a.status === 202)
      return { status: body.duplicate ? 'duplicate' : 'accepted', id: body.id!, idempotency_key: key };
    this.noteRejection(body.error!.code);
    return { status: 'rejected', ...body.error!, idempotency_key: key };
  }

  /** Up to 100 events on one request (POST /api/v1/meter/batch), now, bypassing the queue; results in order. */
  async meterBatch(events: MeterEvent[]): Promise<MeterResult[]> {
    this.admit();
    if (events.length === 0 || events.length > MAX_BATCH)
      throw new RangeError(`a batch holds 1–${MAX_BATCH} events, got ${events.length}`);
    const out: MeterResult[] = new Array(events.length);
    await this.sendBatch(
      events.map((e, i) => {
        const { json, key } = this.prepare(e);
        return { json, key, resolve: (r: MeterResult) => (out[i] = r), reject: () => {} };
      }),
    );
    return out;
  }

  /** Sends everything queued and waits until every request in flight is answered. */
  async flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.queue.length > 0 || this.sending.size > 0) {
      this.pump(true);
      await Promise.race(this.sending);
    }
  }

  /** Refuses new events, flushes, and releases the connections. Safe to call twice. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.onSignal !== undefined) {
      process.removeListener('SIGTERM', this.onSignal);
      process.removeListener('SIGINT', this.onSignal);
    }
    await this.flush();
    for (const w of this.spaceWaiters.splice(0)) w();
    this.transport.close();
  }

  private admit(): void {
    if (this.closed) throw new ClientClosedError();
    if (this.o.quotaBackpressure && Date.now() < this.exhaustedUntil) throw new QuotaExhaustedError();
  }

  private prepare(e: MeterEvent): { json: string; key: string } {
    const key = e.idempotency_key ?? randomUUID();
    const at = e.occurred_at ?? new Date();
    const occurred = at instanceof Date ? at.toISOString().replace(/\.\d{3}Z$/, 'Z') : at;
    const json = JSON.stringify({
      ...e,
      workspace_id: e.workspace_id ?? this.o.workspaceId,
      idempotency_key: key,
      occurred_at: occurred,
    });
    return { json, key };
  }

  private onTimer(): void {
    this.timer = undefined;
    this.pump(true);
  }

  /** Starts batch requests while slots are free: full batches always, a partial one when `partial` (timer, flush). */
  private pump(partial: boolean): void {
    while (this.inflight < this.o.concurrency && this.queue.length > 0) {
      if (!partial && this.queue.length < this.o.batchSize) break;
      const batch = this.queue.splice(0, this.o.batchSize);
      for (const w of this.spaceWaiters.splice(0, batch.length)) w();
      this.inflight++;
      const p: Promise<void> = this.sendBatch(batch).finally(() => {
        this.inflight--;
        this.sending.delete(p);
        this.pump(false);
        if (this.queue.length > 0) this.timer ??= setTimeout(() => this.onTimer(), this.o.flushIntervalMs);
      });
      this.sending.add(p);
    }
  }

  /**
   * Sends a batch until every event has a final answer: events ingest could not store this time
   * (per-event 409 idempotency_key_in_use or 503) go again, alone, after a backoff. Never throws:
   * each event's promise settles.
   */
  private async sendBatch(items: Pending[]): Promise<void> {
    let todo = items;
    for (let attempt = 0; todo.length > 0; attempt++) {
      let a: Answer;
      try {
        a = await this.send('/api/v1/meter/batch', `{"events":[${todo.map((t) => t.json).join(',')}]}`, todo.length);
      } catch (err) {
        for (const t of todo) t.reject(err as Error);
        return;
      }
      if (a.status !== 202) {
        const code = errorCode(a.body) ?? `http_${a.status}`;
        const err = new MeterdRequestError(`the batch was refused: ${code}`, code, a.status, attempt + 1);
        for (const t of todo) t.reject(err);
        return;
      }
      const results = (JSON.parse(a.body) as { results: BatchItem[] }).results;
      const again: Pending[] = [];
      for (const r of results) {
        const t = todo[r.index]!;
        if (r.status === 202)
          t.resolve({ status: r.duplicate ? 'duplicate' : 'accepted', id: r.id!, idempotency_key: t.key });
        else if (retryableCode(r.error!.code) && attempt + 1 < this.o.maxAttempts) again.push(t);
        else {
          this.noteRejection(r.error!.code);
          t.resolve({ status: 'rejected', ...r.error!, idempotency_key: t.key });
        }
      }
      todo = again;
      if (todo.length > 0) {
        const delayMs = backoffMs(
          attempt,
          this.o.retryBaseMs,
          this.o.retryMaxMs,
          retryAfterMs(a.headers['retry-after']),
        );
        const reason = results.find((r) => r.status !== 202 && retryableCode(r.error!.code))!.error!.code;
        this.o.onRetry?.({ path: '/api/v1/meter/batch', attempt: attempt + 1, reason, events: todo.length, delayMs });
        await sleep(delayMs);
      }
    }
  }

  /** One request, re-sent unchanged after 503 / 409 in use / a network error until `maxAttempts`; throws MeterdRequestError then. */
  private async send(path: string, body: string, events = 1): Promise<Answer> {
    for (let attempt = 0; ; attempt++) {
      let a: Answer | undefined;
      let failure: unknown;
      try {
        a = await this.transport.post(path, body);
      } catch (err) {
        failure = err;
      }
      if (a !== undefined) this.noteQuota(a);
      if (a !== undefined && !retryableAnswer(a)) return a;
      if (attempt + 1 >= this.o.maxAttempts) {
        const code = a === undefined ? 'network_error' : (errorCode(a.body) ?? `http_${a.status}`);
        throw new MeterdRequestError(
          `gave up after ${attempt + 1} attempts: ${code}`,
          code,
          a?.status ?? null,
          attempt + 1,
          { cause: failure },
        );
      }
      const delayMs = backoffMs(
        attempt,
        this.o.retryBaseMs,
        this.o.retryMaxMs,
        a && retryAfterMs(a.headers['retry-after']),
      );
      const reason = a === undefined ? 'network_error' : `${a.status} ${errorCode(a.body) ?? ''}`.trim();
      this.o.onRetry?.({ path, attempt: attempt + 1, reason, events, delayMs });
      await sleep(delayMs);
    }
  }

  private noteQuota(a: Answer): void {
    const used = a.headers['x-plan-events-used'];
    if (typeof used !== 'string') return;
    const num = (h: string | string[] | undefined) => (typeof h === 'string' && h !== 'unlimited' ? Number(h) : null);
    const q: Quota = {
      used: Number(used),
      limit: num(a.headers['x-plan-events-limit']),
      remaining: num(a.headers['x-plan-events-remaining']),
    };
    this.quota = q;
    if (q.remaining === 0) this.exhaustedUntil = Date.now() + this.o.quotaProbeMs;
    else if (q.remaining !== null) this.exhaustedUntil = 0;
    this.o.onQuota?.(q);
  }

  private noteRejection(code: string): void {
    if (code === 'plan_quota_exceeded') this.exhaustedUntil = Date.now() + this.o.quotaProbeMs;
  }
}
