import type { Pool, PoolClient } from '@meterd/core';
import type { ValueField } from './config.js';

/** One row of billing_pushes (infra/postgres/003_billing_ledger.sql). */
export interface PushRow {
  workspace_id: string;
  event_type: string;
  window_start: number;
  window_end: number;
  revision: number;
  identifier: string;
  stripe_customer_id: string;
  value_field: ValueField;
  total: bigint;
  value: bigint;
  cancels: string[];
  attempts: number;
}

/** What the ledger already says about one window: the sum of rows that count, and the live rows. */
export interface WindowState {
  counted: bigint;
  maxRevision: number;
  /** Identifiers of counted rows (what a downward correction must cancel), with when each was sent. */
  live: Array<{ identifier: string; revision: number; status: string; sent_at: number | null }>;
}

export const keyOf = (ws: string, type: string, windowStart: number): string => `${ws}\n${type}\n${windowStart}`;

/**
 * The ledger's view of windows starting at or after `fromS`. `counted` statuses are those whose
 * value Stripe has been (or will be) told: pending, sent and failed in live mode (a refused row is
 * not re-planned forever; reconciliation reports it), dry_run in dry run. Superseded rows never count.
 */
export async function readWindowStates(c: PoolClient | Pool, fromS: number, dryRun: boolean): Promise<Map<string, WindowState>> {
  const counted = dryRun ? ['dry_run'] : ['pending', 'sent', 'failed'];
  const { rows } = await c.query<{ workspace_id: string; event_type: string; ws: string; revision: number; identifier: string; status: string; value: string; sent: string | null; superseded_by: number | null }>(
    `SELECT workspace_id, event_type, extract(epoch FROM window_start)::bigint AS ws, revision, identifier, status, value::text,
            extract(epoch FROM sent_at)::bigint AS sent, superseded_by
       FROM billing_pushes WHERE window_start >= to_timestamp($1)`,
    [fromS],
  );
  const out = new Map<string, WindowState>();
  for (const r of rows) {
    const k = keyOf(r.workspace_id, r.event_type, Number(r.ws));
    let s = out.get(k);
    if (s === undefined) out.set(k, (s = { counted: 0n, maxRevision: 0, live: [] }));
    s.maxRevision = Math.max(s.maxRevision, r.revision);
    if (r.superseded_by !== null || !counted.includes(r.status)) continue;
    s.counted += BigInt(r.value);
    s.live.push({ identifier: r.identifier, revision: r.revision, status: r.status, sent_at: r.sent === null ? null : Number(r.sent) });
  }
  return out;
}

export async function insertRows(c: PoolClient, rows: PushRow[], status: 'pending' | 'dry_run'): Promise<number> {
  let inserted = 0;
  // Chunks keep each statement's parameter arrays reasonable for 10,000s of rows.
  for (let i = 0; i < rows.length; i += 5_000) {
    const part = rows.slice(i, i + 5_000);
    const col = <K extends keyof PushRow>(k: K): unknown[] => part.map((r) => (typeof r[k] === 'bigint' ? String(r[k]) : r[k]));
    const res = await c.query(
      `INSERT INTO billing_pushes (workspace_id, event_type, window_start, window_end, revision, identifier, stripe_customer_id,
                                   value_field, total, value, cancels, status, via, sent_at)
       SELECT w, e, to_timestamp(s), to_timestamp(en), r, i, cu, f, t::bigint, v::bigint,
              CASE WHEN ca = '' THEN '{}'::text[] ELSE string_to_array(ca, ' ') END, $12,
              CASE WHEN $12 = 'dry_run' THEN 'dry_run' END, CASE WHEN $12 = 'dry_run' THEN now() END
         FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::int[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
              AS x(w, e, s, en, r, i, cu, f, t, v, ca)
       ON CONFLICT DO NOTHING`,
      [col('workspace_id'), col('event_type'), col('window_start'), col('window_end'), col('revision'), col('identifier'),
        col('stripe_customer_id'), col('value_field'), col('total'), col('value'), part.map((r) => r.cancels.join(' ')), status],
    );
    inserted += res.rowCount ?? 0;
  }
  return inserted;
}

/** Marks the rows a downward correction replaces; pending ones will never be sent. */
export async function supersede(c: PoolClient, ws: string, type: string, windowStart: number, revisions: number[], by: number): Promise<void> {
  await c.query(
    `UPDATE billing_pushes SET superseded_by = $5, status = CASE WHEN status = 'pending' THEN 'superseded' ELSE status END
      WHERE workspace_id = $1 AND event_type = $2 AND window_start = to_timestamp($3) AND revision = ANY($4::int[])`,
    [ws, type, windowStart, revisions, by],
  );
}

/** Claims due pending rows for this transaction; other replicas skip them (and get them back if we crash). */
export async function claimPending(c: PoolClient, limit: number): Promise<PushRow[]> {
  const { rows } = await c.query<Record<string, unknown>>(
    `SELECT workspace_id, event_type, extract(epoch FROM window_start)::bigint AS window_start, extract(epoch FROM window_end)::bigint AS window_end,
            revision, identifier, stripe_customer_id, value_field, total::text, value::text, cancels, attempts
       FROM billing_pushes
      WHERE status = 'pending' AND next_attempt_at <= now()
      ORDER BY next_attempt_at, identifier
      LIMIT $1
      FOR UPDATE SKIP LOCKED`,
    [limit],
  );
  return rows.map((r) => ({
    workspace_id: r.workspace_id as string, event_type: r.event_type as string, window_start: Number(r.window_start), window_end: Number(r.window_end),
    revision: r.revision as number, identifier: r.identifier as string, stripe_customer_id: r.stripe_customer_id as string,
    value_field: r.value_field as ValueField, total: BigInt(r.total as string), value: BigInt(r.value as string), cancels: r.cancels as string[], attempts: r.attempts as number,
  }));
}

export type Outcome =
  | { identifier: string; status: 'sent'; via: 'v2_stream' | 'v1'; response: unknown }
  | { identifier: string; status: 'failed'; error: string; response: unknown }
  | { identifier: string; status: 'retry'; error: string; delayMs: number };

export async function recordOutcomes(c: PoolClient, outcomes: Outcome[]): Promise<void> {
  for (const o of outcomes) {
    if (o.status === 'sent') {
      await c.query(`UPDATE billing_pushes SET status = 'sent', via = $2, sent_at = now(), attempts = attempts + 1, stripe_response = $3, last_error = NULL WHERE identifier = $1`,
        [o.identifier, o.via, JSON.stringify(o.response ?? null)]);
    } else if (o.status === 'failed') {
      await c.query(`UPDATE billing_pushes SET status = 'failed', attempts = attempts + 1, last_error = $2, stripe_response = $3 WHERE identifier = $1`,
        [o.identifier, o.error, JSON.stringify(o.response ?? null)]);
    } else {
      await c.query(`UPDATE billing_pushes SET attempts = attempts + 1, last_error = $2, next_attempt_at = now() + ($3::int * interval '1 millisecond') WHERE identifier = $1`,
        [o.identifier, o.error, o.delayMs]);
    }
  }
}

export async function pendingCount(pool: Pool): Promise<number> {
  const { rows } = await pool.query<{ n: string }>(`SELECT count(*)::text AS n FROM billing_pushes WHERE status = 'pending'`);
  return Number(rows[0]!.n);
}
