import type { ClickHouseClient } from '@clickhouse/client';
import { insertEventBatch, toClickHouseDateTime, type EventRow } from '@meterd/core/clickhouse';
import { formatRfc3339 } from '@meterd/core/event';
import { GRANULARITIES, bucketStart, type Granularity } from '../src/rollups/granularity.js';
import { readRollups } from '../src/rollups/read.js';
import { totalsOf } from '../src/reconcile/compare.js';
import type { Aggregator } from '../src/worker/aggregator.js';

/** Deterministic PRNG (mulberry32) so a failing seed can be replayed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Ev {
  workspace_id: string;
  event_type: string;
  idempotency_key: string;
  event_id: string;
  quantity: number;
  gmv_cents: number;
  currency: string;
  occurred_ms: number;
  received_ms: number;
}

export function row(e: Ev): EventRow {
  return {
    workspace_id: e.workspace_id,
    event_type: e.event_type,
    idempotency_key: e.idempotency_key,
    event_id: e.event_id,
    quantity: e.quantity,
    gmv_cents: e.gmv_cents,
    currency: e.currency,
    occurred_at: toClickHouseDateTime(e.occurred_ms),
    received_at: toClickHouseDateTime(e.received_ms),
  };
}

/**
 * One shipped batch, as ingest's shipper does: an INSERT into events (one part per call), then the
 * batch's record. The same rows again are a replay of the same batch.
 */
export async function insertEvents(
  ch: ClickHouseClient,
  evs: readonly Ev[],
  batch?: { id: string; attempt: number },
): Promise<void> {
  await insertEventBatch(ch, evs.map(row), batch);
}

export interface StreamOptions {
  workspaces: string[];
  distinct: number;
  /** Events' occurred_at fall in [base, base + spanMs). */
  base: number;
  spanMs: number;
  closeAfterSeconds: number;
}

/**
 * The copy horizon of the tests: the largest allowed (35 days), so every copy the random streams
 * make (forgotten retries up to ~10 days after the original) is compared, as the reference assumes.
 */
export const COPY_HORIZON_S = 35 * 86_400;

/**
 * A random stream of insert batches: distinct events in shuffled (out-of-order) order, some
 * received long after their hour closed (late), some copied inside a batch, some retried later
 * with a new event id but the same business event (some in another hour: a retry Redis forgot), and
 * whole batches replayed (a spool segment shipped again after a crash). Returns the batches and the
 * distinct events they carry (each counts once, in the hour of the copy received first).
 */
export function randomStream(rand: () => number, o: StreamOptions): { batches: Ev[][]; distinct: Ev[] } {
  const types = ['checkout.completed', 'refund.issued', 'api.call'];
  const currencies = ['USD', 'EUR', 'JPY'];
  const distinct: Ev[] = [];
  for (let i = 0; i < o.distinct; i++) {
    const occurred = o.base + Math.floor((rand() * o.spanMs) / 1000) * 1000;
    const late = rand() < 0.1;
    const delay = late
      ? 3_600_000 + o.closeAfterSeconds * 1000 + Math.floor(rand() * 7200) * 1000
      : Math.floor(rand() * 20) * 1000;
    distinct.push({
      workspace_id: o.workspaces[Math.floor(rand() * o.workspaces.length)]!,
      event_type: types[Math.floor(rand() * types.length)]!,
      idempotency_key: `order_${i}_${Math.floor(rand() * 1e9)}`,
      event_id: `evt_${i}`,
      quantity: 1 + Math.floor(rand() * 5),
      // Up to 5e13 each: sums pass 2^53, so any double in the path would show.
      gmv_cents: rand() < 0.2 ? Math.floor(rand() * 5e13) : Math.floor(rand() * 100_000),
      currency: currencies[Math.floor(rand() * currencies.length)]!,
      occurred_ms: occurred,
      received_ms: occurred + delay,
    });
  }
  const order = [...distinct].sort(() => rand() - 0.5);
  const batches: Ev[][] = [];
  // Retries that Redis forgot: stored again in a later batch, received hours to days later, with
  // occurred_at = their own arrival (the client left it out), so usually in another hour, day or month.
  let forgotten: Ev[] = [];
  let i = 0;
  while (i < order.length) {
    const n = 1 + Math.floor(rand() * 40);
    const batch = [...forgotten, ...order.slice(i, i + n)];
    forgotten = [];
    i += n;
    for (const e of order.slice(i - n, i)) {
      if (rand() < 0.15) batch.push(e);
      if (rand() < 0.1) batch.push({ ...e, event_id: `${e.event_id}_retry`, received_ms: e.received_ms + 1000 });
      if (rand() < 0.08) {
        const at = e.received_ms + 3_600_000 + Math.floor(rand() * 10 * 86_400) * 1000;
        forgotten.push({ ...e, event_id: `${e.event_id}_forgotten`, occurred_ms: at, received_ms: at });
      }
    }
    batches.push(batch);
    if (batches.length > 1 && rand() < 0.2) batches.push(batches[Math.floor(rand() * batches.length)]!);
  }
  if (forgotten.length > 0) batches.push(forgotten);
  return { batches, distinct };
}

export type Totals = Record<
  'events' | 'quantity' | 'gmv_cents' | 'first_event_at' | 'last_event_at' | 'late_events',
  string
>;
export type Snapshot = Record<Granularity, Map<string, Totals>>;

const key = (ws: string, et: string, cur: string, start: number): string =>
  `${ws} ${et} ${cur} ${formatRfc3339(start)}`;

/** What the rollups must say, computed here from the distinct events alone. */
export function referenceSnapshot(distinct: readonly Ev[], closeAfterSeconds: number): Snapshot {
  const out = {} as Snapshot;
  for (const g of GRANULARITIES) {
    const acc = new Map<string, { n: bigint; q: bigint; gmv: bigint; first: number; last: number; late: bigint }>();
    for (const e of distinct) {
      const k = key(e.workspace_id, e.event_type, e.currency, bucketStart(g, e.occurred_ms));
      const a = acc.get(k) ?? { n: 0n, q: 0n, gmv: 0n, first: Infinity, last: -Infinity, late: 0n };
      a.n += 1n;
      a.q += BigInt(e.quantity);
      a.gmv += BigInt(e.gmv_cents);
      a.first = Math.min(a.first, e.occurred_ms);
      a.last = Math.max(a.last, e.occurred_ms);
      if (e.received_ms >= bucketStart('hour', e.occurred_ms) + 3_600_000 + closeAfterSeconds * 1000) a.late += 1n;
      acc.set(k, a);
    }
    out[g] = new Map(
      [...acc].map(([k, a]) => [
        k,
        {
          events: String(a.n),
          quantity: String(a.q),
          gmv_cents: String(a.gmv),
          first_event_at: formatRfc3339(a.first),
          last_event_at: formatRfc3339(a.last),
          late_events: String(a.late),
        },
      ]),
    );
  }
  return out;
}

/** The current rollup rows of every table, in the same shape. */
export async function rollupSnapshot(ch: ClickHouseClient): Promise<Snapshot> {
  const out = {} as Snapshot;
  for (const g of GRANULARITIES) {
    const rows = await readRollups(ch, g, { from: 0, to: Date.UTC(2100, 0, 1) });
    out[g] = new Map(rows.map((r) => [key(r.workspace_id, r.event_type, r.currency, r.window_start), totalsOf(r)]));
  }
  return out;
}

export function snapshotToObject(s: Snapshot): Record<string, Record<string, Totals>> {
  return Object.fromEntries(
    GRANULARITIES.map((g) => [g, Object.fromEntries([...s[g]].sort(([a], [b]) => (a < b ? -1 : 1)))]),
  );
}

/** Runs cycles until every shard is held and one full cycle has run after the last insert. */
export async function catchUp(agg: Aggregator, shards: number): Promise<void> {
  for (let i = 0; i < 50; i++) {
    const r = await agg.runOnce();
    if (r.shards === shards) return;
  }
  throw new Error('the aggregator never held every shard');
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
