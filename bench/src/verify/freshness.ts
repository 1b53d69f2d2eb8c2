import type { ClickHouseClient } from '@clickhouse/client';
import { dateTimeLit, ident, lit } from '@meterd/core/clickhouse';
import { KeyTracker } from '../load/tracker.js';
import type { Tenant } from '../load/workloads.js';

const SEND_EVERY_MS = 100;
const POLL_EVERY_MS = 50;

/** Sent → counted in the aggregator's hourly rollup (usage_hourly FINAL). */
export interface RollupFreshness {
  table: string;
  probesCounted: number;
  p50Ms: number | undefined;
  p99Ms: number | undefined;
  maxMs: number | undefined;
}

export interface Freshness {
  table: string;
  probesSent: number;
  probesAcknowledged: number;
  probesSeen: number;
  p50Ms: number | undefined;
  p99Ms: number | undefined;
  maxMs: number | undefined;
  /** Poll period: each figure is late by at most this much. */
  resolutionMs: number;
  rollup?: RollupFreshness;
}

/**
 * End-to-end freshness: while the load runs, one probe event every 100 ms goes through the same
 * ingest (same connection pool as any client's), and ClickHouse is polled every 50 ms for probes
 * that became visible. Freshness = first seen − sent. Probes are real events with keys of their own
 * tag, so the loss/duplicate verification covers them too.
 *
 * With `rollupTable`, the aggregator's hourly rollup is polled too: its `events` count for the
 * probes' own event type rises as probes are folded in, and the i-th acknowledged probe (in send
 * order) counts as visible there once the count reaches i + 1.
 */
export class FreshnessProbe {
  readonly tracker: KeyTracker;
  private readonly sentAt = new Map<string, number>();
  private readonly seenAfter: number[] = [];
  private sendTimer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private polling = false;
  private inflight = new Set<Promise<void>>();
  readonly eventType: string;
  /** Send times of acknowledged probes, in send order, for the rollup count. */
  private readonly ackedSent: number[] = [];
  private readonly rollupAfter: number[] = [];
  private rollupPolling = false;

  constructor(
    tag: string,
    private readonly baseUrl: string,
    private readonly tenant: Tenant,
    private readonly occurredAt: string,
    private readonly ch: ClickHouseClient | undefined,
    private readonly table = 'events',
    private readonly rollupTable?: string,
  ) {
    this.tracker = new KeyTracker(tag);
    this.eventType = `bench.probe.${tag}`;
  }

  start(): void {
    this.sendTimer = setInterval(() => this.sendOne(), SEND_EVERY_MS);
    if (this.ch) {
      this.pollTimer = setInterval(() => {
        void this.poll();
        if (this.rollupTable) void this.pollRollup();
      }, POLL_EVERY_MS);
    }
  }

  private sendOne(): void {
    const n = this.tracker.fresh();
    const key = this.tracker.key(n);
    const body = `{"workspace_id":"${this.tenant.workspaceId}","event_type":"${this.eventType}","quantity":1,"gmv_cents":1,"currency":"USD","idempotency_key":"${key}","occurred_at":"${this.occurredAt}"}`;
    const sent = Date.now();
    const p = fetch(`${this.baseUrl}/api/v1/meter`, {
      method: 'POST',
      headers: { authorization: `Bearer ${this.tenant.token}`, 'content-type': 'application/json' },
      body,
      signal: AbortSignal.timeout(30_000),
    })
      .then(
        async (res) => {
          await res.arrayBuffer();
          if (res.status === 202) {
            this.tracker.ack(n);
            this.sentAt.set(key, sent);
            let i = this.ackedSent.length;
            while (i > 0 && this.ackedSent[i - 1]! > sent) i--;
            this.ackedSent.splice(i, 0, sent);
          } else if (res.status !== 409) {
            this.tracker.refuse(n);
          }
        },
        () => {},
      )
      .finally(() => this.inflight.delete(p));
    this.inflight.add(p);
  }

  private async poll(): Promise<void> {
    if (this.polling || this.sentAt.size === 0) return;
    this.polling = true;
    try {
      const keys = [...this.sentAt.keys()];
      const rs = await this.ch!.query({
        query:
          // occurred_at (every probe's, fixed for the run) prunes to one hour by the time-first key:
          // the poll must not cost ClickHouse in proportion to the workspace's history (--preload).
          `SELECT DISTINCT idempotency_key AS k FROM ${ident(this.table)} WHERE workspace_id = ${lit(this.tenant.workspaceId)} ` +
          `AND occurred_at = toDateTime(${dateTimeLit(Date.parse(this.occurredAt))}, 'UTC') ` +
          `AND event_type = ${lit(this.eventType)} AND idempotency_key IN (${keys.map(lit).join(',')})`,
        format: 'JSONEachRow',
      });
      const now = Date.now();
      for (const { k } of await rs.json<{ k: string }>()) {
        const sent = this.sentAt.get(k);
        if (sent === undefined) continue;
        this.seenAfter.push(now - sent);
        this.sentAt.delete(k);
      }
    } catch {
      // a slow or failed poll only delays the next one
    } finally {
      this.polling = false;
    }
  }

  private async pollRollup(): Promise<void> {
    if (this.rollupPolling || this.rollupAfter.length >= this.ackedSent.length) return;
    this.rollupPolling = true;
    try {
      const rs = await this.ch!.query({
        query: `SELECT sum(events) AS c FROM ${ident(this.rollupTable!)} FINAL WHERE workspace_id = ${lit(this.tenant.workspaceId)} AND event_type = ${lit(this.eventType)}`,
        format: 'JSONEachRow',
      });
      const c = Number((await rs.json<{ c: string }>())[0]?.c ?? 0);
      const now = Date.now();
      while (this.rollupAfter.length < Math.min(c, this.ackedSent.length))
        this.rollupAfter.push(now - this.ackedSent[this.rollupAfter.length]!);
    } catch {
      // the rollup table may lag or be mid-migration: the next poll tries again
    } finally {
      this.rollupPolling = false;
    }
  }

  /** Each acknowledged probe counted in the rollup so far: when it was sent and how long it took. */
  rollupLags(): { sentAt: number; lagMs: number }[] {
    return this.rollupAfter.map((lagMs, i) => ({ sentAt: this.ackedSent[i]!, lagMs }));
  }

  /** Stops sending; keeps polling until every acknowledged probe is visible or `waitMs` passed. */
  async finish(waitMs = 30_000): Promise<Freshness> {
    clearInterval(this.sendTimer);
    await Promise.allSettled([...this.inflight]);
    const deadline = Date.now() + waitMs;
    const pending = () =>
      this.sentAt.size > 0 || (this.rollupTable !== undefined && this.rollupAfter.length < this.ackedSent.length);
    while (this.ch && pending() && Date.now() < deadline) await new Promise((r) => setTimeout(r, POLL_EVERY_MS));
    clearInterval(this.pollTimer);
    const s = [...this.seenAfter].sort((a, b) => a - b);
    const q = (p: number) => (s.length === 0 ? undefined : s[Math.min(s.length - 1, Math.floor(p * s.length))]);
    const r = [...this.rollupAfter].sort((a, b) => a - b);
    const qr = (p: number) => (r.length === 0 ? undefined : r[Math.min(r.length - 1, Math.floor(p * r.length))]);
    const rollup: RollupFreshness | undefined =
      this.rollupTable === undefined
        ? undefined
        : {
            table: this.rollupTable,
            probesCounted: r.length,
            p50Ms: qr(0.5),
            p99Ms: qr(0.99),
            maxMs: r.length === 0 ? undefined : r[r.length - 1],
          };
    return {
      ...(rollup ? { rollup } : {}),
      table: this.table,
      probesSent: this.tracker.issued,
      probesAcknowledged: this.tracker.acked().count,
      probesSeen: s.length,
      p50Ms: q(0.5),
      p99Ms: q(0.99),
      maxMs: s.length === 0 ? undefined : s[s.length - 1],
      resolutionMs: POLL_EVERY_MS,
    };
  }
}
