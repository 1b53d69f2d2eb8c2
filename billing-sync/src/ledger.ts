import { PG_TABLES } from '@meterd/core/contracts';
import { type Pool, type PoolClient } from '@meterd/core/store';
import type { ValueField } from './config.js';

/** One row of billing_pushes (infra/postgres/003_billing_ledger.sql, 005_billing_money_path.sql). */
export interface PushRow {
  workspace_id: string;
  event_type: string;
  /** ISO 4217 code for money meters, '' for unit meters. */
  currency: string;
  /** The Stripe meter's event_name (meters.ts). */
  event_name: string;
  window_start: number;
  window_end: number;
  revision: number;
  identifier: string;
  stripe_customer_id: string;
  /** 'meter' for a user-defined meter's row (meter_id set). */
  value_field: ValueField | 'meter';
  /** The meter of a user-defined meter's row (012_meter_billing.sql); '' for the built-in totals. */
  meter_id: string;
  /** The meter's group values in group_by order as a JSON array; '' for the built-in totals. */
  group_key: string;
  /** Sent in the meter event payload: the meter's group_by properties and this group's values. */
  dimensions: Record<string, string>;
  total: bigint;
  /** What this row adds to Stripe's sum; negative for refunds and downward corrections. */
  value: bigint;
  cancels: string[];
  attempts: number;
  /** The usage as-of (epoch s) the row was planned from. */
  as_of: number | null;
  /**
   * When the row was planned (epoch s, the database's clock). Every attempt comes after it, so
   * unlike first_attempt_at (stamped with an outcome, lost with it when the process dies after
   * Stripe accepted) it always bounds how long ago Stripe may have seen the identifier.
   */
  planned_at: number;
}

export type NewRow = Omit<PushRow, 'planned_at'> & {
  status: 'pending' | 'dry_run' | 'unbillable';
  reason: string | null;
};

/** What the ledger already says about one billed key (workspace, event type, currency, window; meter and group for a meter). */
export interface WindowState {
  /** Sum of the rows Stripe has been (or will be) told, plus what was recorded as unbillable. */
  counted: bigint;
  maxRevision: number;
  /** Newest as-of any counted row was planned from (epoch s); null when none recorded one. */
  maxAsOf: number | null;
  /** A rejected or failed row waits for its cause to be fixed: the key is not re-planned meanwhile. */
  held: boolean;
}

export interface LedgerView {
  states: Map<string, WindowState>;
  /** (workspace, event type, window) keys holding rows from before per-currency billing (006). */
  legacy: Set<string>;
}

export const keyOf = (
  ws: string,
  type: string,
  currency: string,
  windowStart: number,
  meterId = '',
  groupKey = '',
): string => `${ws}\n${type}\n${currency}\n${windowStart}\n${meterId}\n${groupKey}`;
export const legacyKeyOf = (ws: string, type: string, windowStart: number): string => `${ws}\n${type}\n${windowStart}`;

/**
 * The ledger's view of windows starting at or after `fromS`. Rows that count: pending and sent in
 * live mode, and unbillable (the difference is accounted for, not re-recorded every pass); dry_run
 * in dry run. Superseded and retried rows never count. Rejected and failed rows neither: Stripe
 * refused them, so nothing of them is billed; they hold their key back (a refused amount is not
 * re-planned every pass) until they are retried (worker.ts, or `reconcile:stripe --retry-rejected`).
 */
export async function readLedger(c: PoolClient | Pool, fromS: number, dryRun: boolean): Promise<LedgerView> {
  const counted = dryRun ? ['dry_run'] : ['pending', 'sent', 'unbillable'];
  const { rows } = await c.query<{
    workspace_id: string;
    event_type: string;
    currency: string;
    value_field: string;
    ws: string;
    revision: number;
    status: string;
    value: string;
    as_of: string | null;
    superseded_by: number | null;
    meter_id: string;
    group_key: string;
  }>(
    `SELECT workspace_id, event_type, currency, value_field, extract(epoch FROM window_start)::bigint AS ws, revision, status, value::text,
            extract(epoch FROM as_of)::bigint AS as_of, superseded_by, meter_id, group_key
       FROM ${PG_TABLES.billingPushes} WHERE window_start >= to_timestamp($1)`,
    [fromS],
  );
  const states = new Map<string, WindowState>();
  const legacy = new Set<string>();
  for (const r of rows) {
    const w = Number(r.ws);
    if (r.value_field === 'gmv_cents' && r.currency === '') legacy.add(legacyKeyOf(r.workspace_id, r.event_type, w));
    const k = keyOf(r.workspace_id, r.event_type, r.currency, w, r.meter_id, r.group_key);
    let s = states.get(k);
    if (s === undefined) states.set(k, (s = { counted: 0n, maxRevision: 0, maxAsOf: null, held: false }));
    s.maxRevision = Math.max(s.maxRevision, r.revision);
    if (r.status === 'rejected' || r.status === 'failed') s.held = true;
    if (r.superseded_by !== null || !counted.includes(r.status)) continue;
    s.counted += BigInt(r.value);
    if (r.as_of !== null) s.maxAsOf = Math.max(s.maxAsOf ?? 0, Number(r.as_of));
  }
  return { states, legacy };
}

export async function insertRows(c: PoolClient, rows: NewRow[]): Promise<number> {
  let inserted = 0;
  // Chunks keep each statement's parameter arrays reasonable for 10,000s of rows.
  for (let i = 0; i < rows.length; i += 5_000) {
    const part = rows.slice(i, i + 5_000);
    const col = <K extends keyof NewRow>(k: K): unknown[] =>
      part.map((r) => (typeof r[k] === 'bigint' ? String(r[k]) : r[k]));
    const res = await c.query(
      `INSERT INTO ${PG_TABLES.billingPushes} (workspace_id, event_type, currency, event_name, window_start, window_end, revision, identifier, stripe_customer_id,
                                   value_field, total, value, cancels, status, via, sent_at, as_of, reason, meter_id, group_key, dimensions)
       SELECT w, e, cur, en, to_timestamp(s), to_timestamp(se), r, i, cu, f, t::bigint, v::bigint, '{}'::text[], st,
              CASE WHEN st = 'dry_run' THEN 'dry_run' END, CASE WHEN st = 'dry_run' THEN now() END, to_timestamp(a), re, m, g, d::jsonb
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::int[], $8::text[], $9::text[], $10::text[],
                     $11::text[], $12::text[], $13::text[], $14::bigint[], $15::text[], $16::text[], $17::text[], $18::text[])
              AS x(w, e, cur, en, s, se, r, i, cu, f, t, v, st, a, re, m, g, d)
       ON CONFLICT DO NOTHING`,
      [
        col('workspace_id'),
        col('event_type'),
        col('currency'),
        col('event_name'),
        col('window_start'),
        col('window_end'),
        col('revision'),
        col('identifier'),
        col('stripe_customer_id'),
        col('value_field'),
        col('total'),
        col('value'),
        col('status'),
        col('as_of'),
        col('reason'),
        col('meter_id'),
        col('group_key'),
        part.map((r) => JSON.stringify(r.dimensions)),
      ],
    );
    inserted += res.rowCount ?? 0;
  }
  return inserted;
}

/** Who holds a batch of claimed rows, and for how long: a token per batch, so a late outcome of a lost claim is refused. */
export interface Claim {
  token: string;
  leaseMs: number;
}

/**
 * Claims due pending rows for `claim.leaseMs`, in one statement that commits at once: no
 * transaction stays open while Stripe is called. Other replicas skip rows under a live claim; a
 * claim whose holder died or stalled expires and the rows are claimed again, re-sent under the same
 * identifiers, which Stripe deduplicates. Due means by the database clock or by the pass's clock,
 * whichever is later.
 */
export async function claimPending(pool: Pool, limit: number, nowS: number, claim: Claim): Promise<PushRow[]> {
  const { rows } = await pool.query<Record<string, unknown>>(
    `UPDATE ${PG_TABLES.billingPushes} p SET claimed_by = $3, lease_until = now() + make_interval(secs => $4::float8 / 1000)
      WHERE p.identifier IN (
        SELECT identifier FROM ${PG_TABLES.billingPushes}
         WHERE status = 'pending' AND next_attempt_at <= greatest(now(), to_timestamp($2))
           AND (lease_until IS NULL OR lease_until <= now())
         ORDER BY next_attempt_at, identifier
         LIMIT $1
         FOR UPDATE SKIP LOCKED)
      RETURNING workspace_id, event_type, currency, event_name, extract(epoch FROM window_start)::bigint AS window_start,
            extract(epoch FROM window_end)::bigint AS window_end, revision, identifier, stripe_customer_id, value_field,
            total::text, value::text, cancels, attempts, extract(epoch FROM as_of)::bigint AS as_of,
            extract(epoch FROM created_at)::bigint AS planned_at, next_attempt_at, meter_id, group_key, dimensions`,
    [limit, nowS, claim.token, claim.leaseMs],
  );
  // RETURNING has no ORDER BY: the batch keeps the order the rows were due in.
  rows.sort(
    (a, b) =>
      (a.next_attempt_at as Date).getTime() - (b.next_attempt_at as Date).getTime() ||
      (a.identifier as string).localeCompare(b.identifier as string),
  );
  const num = (v: unknown): number | null => (v === null ? null : Number(v));
  return rows.map((r) => ({
    workspace_id: r.workspace_id as string,
    event_type: r.event_type as string,
    currency: r.currency as string,
    event_name: r.event_name as string,
    window_start: Number(r.window_start),
    window_end: Number(r.window_end),
    revision: r.revision as number,
    identifier: r.identifier as string,
    stripe_customer_id: r.stripe_customer_id as string,
    value_field: r.value_field as PushRow['value_field'],
    meter_id: r.meter_id as string,
    group_key: r.group_key as string,
    dimensions: r.dimensions as Record<string, string>,
    total: BigInt(r.total as string),
    value: BigInt(r.value as string),
    cancels: r.cancels as string[],
    attempts: r.attempts as number,
    as_of: num(r.as_of),
    planned_at: Number(r.planned_at),
  }));
}

export type Outcome =
  | { identifier: string; status: 'sent'; via: 'v2_stream' | 'v1' | 'summary'; response: unknown }
  | { identifier: string; status: 'failed'; error: string; response: unknown }
  | { identifier: string; status: 'retry'; error: string; delayMs: number }
  | { identifier: string; status: 'rejected' | 'unbillable'; reason: string };

/**
 * Records what happened to each claimed row; `nowS` stamps the first attempt of rows sent now.
 * Only rows still pending under this claim are updated, and their claim is cleared: if the lease
 * expired and another replica claimed them meanwhile, that replica records the outcome of its own
 * (deduplicated) send; a row the control API marked rejected meanwhile stays rejected.
 */
export async function recordOutcomes(c: PoolClient, outcomes: Outcome[], nowS: number, token: string): Promise<void> {
  const first = 'first_attempt_at = COALESCE(first_attempt_at, to_timestamp($2))';
  const mine = (tokenParam: number): string => `identifier = $1 AND status = 'pending' AND claimed_by = $${tokenParam}`;
  const release = 'claimed_by = NULL, lease_until = NULL';
  for (const o of outcomes) {
    if (o.status === 'sent') {
      await c.query(
        `UPDATE ${PG_TABLES.billingPushes} SET status = 'sent', via = $3, sent_at = now(), attempts = attempts + 1, stripe_response = $4, last_error = NULL, ${first}, ${release}
          WHERE ${mine(5)}`,
        [o.identifier, nowS, o.via, JSON.stringify(o.response ?? null), token],
      );
    } else if (o.status === 'failed') {
      await c.query(
        `UPDATE ${PG_TABLES.billingPushes} SET status = 'failed', attempts = attempts + 1, last_error = $3, stripe_response = $4, ${first}, ${release}
          WHERE ${mine(5)}`,
        [o.identifier, nowS, o.error, JSON.stringify(o.response ?? null), token],
      );
    } else if (o.status === 'retry') {
      await c.query(
        `UPDATE ${PG_TABLES.billingPushes} SET attempts = attempts + 1, last_error = $3, next_attempt_at = now() + ($4::int * interval '1 millisecond'), ${first}, ${release}
          WHERE ${mine(5)}`,
        [o.identifier, nowS, o.error, o.delayMs, token],
      );
    } else {
      await c.query(
        `UPDATE ${PG_TABLES.billingPushes} SET status = $2, reason = $3, rejected_at = CASE WHEN $2 = 'rejected' THEN now() END, ${release}
          WHERE ${mine(4)}`,
        [o.identifier, o.status, o.reason, token],
      );
    }
  }
}

/** Gives a batch's rows back at once (its send failed before any outcome): the next pass claims them again. */
export async function releaseClaim(pool: Pool, token: string): Promise<void> {
  await pool.query(
    `UPDATE ${PG_TABLES.billingPushes} SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = $1 AND status = 'pending'`,
    [token],
  );
}

/**
 * What the ledger says Stripe holds for one customer × meter × window: the rows sent (or
 * verified) to it. Rows of every workspace sharing the customer count, as they do at Stripe.
 */
export async function sentValue(
  c: PoolClient | Pool,
  customer: string,
  eventName: string,
  windowStart: number,
): Promise<bigint> {
  const { rows } = await c.query<{ v: string }>(
    `SELECT COALESCE(sum(value), 0)::text AS v FROM ${PG_TABLES.billingPushes}
      WHERE stripe_customer_id = $1 AND event_name = $2 AND window_start = to_timestamp($3) AND status = 'sent' AND superseded_by IS NULL`,
    [customer, eventName, windowStart],
  );
  return BigInt(rows[0]!.v);
}

/**
 * The sum of every pending row of one customer × meter × window planned before `plannedBeforeS`
 * (epoch s): the rows a re-send check must weigh together, whichever batch or replica holds them.
 */
export async function stalePendingValue(
  c: PoolClient | Pool,
  customer: string,
  eventName: string,
  windowStart: number,
  plannedBeforeS: number,
): Promise<bigint> {
  const { rows } = await c.query<{ v: string }>(
    `SELECT COALESCE(sum(value), 0)::text AS v FROM ${PG_TABLES.billingPushes}
      WHERE stripe_customer_id = $1 AND event_name = $2 AND window_start = to_timestamp($3) AND status = 'pending'
        AND superseded_by IS NULL AND extract(epoch FROM created_at)::bigint < $4`,
    [customer, eventName, windowStart, plannedBeforeS],
  );
  return BigInt(rows[0]!.v);
}

export async function pendingCount(pool: Pool): Promise<number> {
  const { rows } = await pool.query<{ n: string }>(
    `SELECT count(*)::text AS n FROM ${PG_TABLES.billingPushes} WHERE status = 'pending'`,
  );
  return Number(rows[0]!.n);
}

export async function rejectedCount(pool: Pool): Promise<number> {
  const { rows } = await pool.query<{ n: string }>(
    `SELECT count(*)::text AS n FROM ${PG_TABLES.billingPushes} WHERE status = 'rejected'`,
  );
  return Number(rows[0]!.n);
}

/**
 * Error codes whose cause billing-sync can see fixed by itself (the meter now exists and the
 * workspace's customer exists); rows rejected for any other reason wait for an operator
 * (`reconcile:stripe --retry-rejected`).
 */
const SELF_CHECKED = ['no_meter', 'archived_meter', 'meter_event_customer_not_found'];

/** Rejected rows whose cause may be fixed now: their meter and the workspace's current customer. */
export async function rejectedCauses(
  pool: Pool,
  limit: number,
): Promise<Array<{ event_name: string; customer: string }>> {
  const { rows } = await pool.query<{ event_name: string; customer: string }>(
    `SELECT DISTINCT p.event_name, w.stripe_customer_id AS customer
       FROM ${PG_TABLES.billingPushes} p JOIN ${PG_TABLES.workspaces} w ON w.id = p.workspace_id
      WHERE p.status = 'rejected' AND w.stripe_customer_id IS NOT NULL AND split_part(p.reason, ':', 1) = ANY($2::text[])
      LIMIT $1`,
    [limit, SELF_CHECKED],
  );
  return rows;
}

/**
 * Rejected rows of this meter and customer's workspaces become `retried`: the planner sends their
 * amount again. `all` (the operator fixed the causes) also retries every failed row.
 */
export async function retryRejected(
  pool: Pool,
  where: { event_name: string; customer: string } | 'all',
): Promise<number> {
  const res =
    where === 'all'
      ? await pool.query(
          `UPDATE ${PG_TABLES.billingPushes} SET status = 'retried' WHERE status IN ('rejected', 'failed')`,
        )
      : await pool.query(
          `UPDATE ${PG_TABLES.billingPushes} SET status = 'retried'
        WHERE status = 'rejected' AND event_name = $1 AND workspace_id IN (SELECT id FROM ${PG_TABLES.workspaces} WHERE stripe_customer_id = $2)`,
          [where.event_name, where.customer],
        );
  return res.rowCount ?? 0;
}
