import type Stripe from 'stripe';
import { PG_TABLES } from '@meterd/core/contracts';
import { type Environment } from '@meterd/core/keys';
import { type Pool } from '@meterd/core/store';
import { callStripe } from '../billing/stripe-client.js';

export interface Check {
  check: string;
  ok: boolean;
  reason: string;
}

export interface MeterReadiness {
  event_name: string;
  ready: boolean;
  checks: Check[];
}

export interface Readiness {
  ready: boolean;
  checks: Check[];
  meters: MeterReadiness[];
}

/** Ledger rows read per meter: the last push, and whether any recent row is unbilled. */
interface MeterRow {
  event_name: string;
  last_status: string;
  last_reason: string | null;
  unbilled: number;
}

/**
 * Which meter rows Stripe did not bill (docs/billing.md): unbillable (past Stripe's window),
 * rejected (Stripe's error report, a missing meter or customer), failed (refused for good).
 */
const UNBILLED = `'unbillable', 'rejected', 'failed'`;
/**
 * How long the list of Stripe meters is reused. The platform has one Stripe account whose rate
 * limit billing-sync needs too, so tenants' readiness calls share one listing a minute instead of
 * each paging through every meter; a meter created or archived shows within this time.
 */
export const METERS_TTL_MS = 60_000;
/** The look-back of the ledger read: Stripe's meter event window, so the cost follows recent pushes, not history. */
const LOOKBACK_DAYS = 35;

/**
 * Whether a workspace's usage can be billed, check by check with the reason: Stripe configured, a
 * customer linked, and for each meter billing-sync has pushed to in the last 35 days, that Stripe
 * has it active, its last push was accepted, and none of its rows is unbilled.
 */
export class ReadinessService {
  /** The last listing (or the one running, which concurrent calls join); a failed one is not kept. */
  private meters: { at: number; value: Promise<Map<string, Stripe.Billing.Meter>> } | null = null;

  constructor(
    private readonly pool: Pool,
    private readonly stripe: Stripe | null,
  ) {}

  async of(
    workspaceId: string,
    stripeCustomerId: string | null,
    environment: Environment = 'live',
  ): Promise<Readiness> {
    const stripe = this.stripe;
    const checks: Check[] = [
      stripe === null
        ? { check: 'stripe_configured', ok: false, reason: 'STRIPE_SECRET_KEY is not set on this server' }
        : { check: 'stripe_configured', ok: true, reason: 'a Stripe key is configured' },
      stripeCustomerId === null
        ? { check: 'customer_linked', ok: false, reason: 'the workspace has no Stripe customer' }
        : { check: 'customer_linked', ok: true, reason: `linked to Stripe customer ${stripeCustomerId}` },
      environment === 'test'
        ? {
            check: 'live_environment',
            ok: false,
            reason: 'this is the test environment: its usage is never pushed to Stripe (docs/api.md §13)',
          }
        : { check: 'live_environment', ok: true, reason: 'the live environment is billed' },
    ];
    const rows = await this.meterRows(workspaceId);
    const stripeMeters =
      stripe === null || rows.length === 0
        ? null
        : await callStripe('listing Stripe meters failed; retry later', () => this.metersOf(stripe));
    const meters = rows.map((r) => {
      const mc: Check[] = [meterCheck(r.event_name, stripeMeters), lastPushCheck(r), unbilledCheck(r)];
      return { event_name: r.event_name, ready: mc.every((c) => c.ok), checks: mc };
    });
    return { ready: checks.every((c) => c.ok) && meters.every((m) => m.ready), checks, meters };
  }

  private metersOf(stripe: Stripe): Promise<Map<string, Stripe.Billing.Meter>> {
    const now = Date.now();
    if (this.meters !== null && now - this.meters.at < METERS_TTL_MS) return this.meters.value;
    const entry = { at: now, value: metersByName(stripe) };
    this.meters = entry;
    entry.value.catch(() => {
      // The caller reports the failure; the next call lists again.
      if (this.meters === entry) this.meters = null;
    });
    return entry.value;
  }

  private async meterRows(workspaceId: string): Promise<MeterRow[]> {
    const { rows } = await this.pool.query<MeterRow>(
      `SELECT event_name,
              (array_agg(status ORDER BY created_at DESC, revision DESC))[1] AS last_status,
              (array_agg(COALESCE(reason, last_error) ORDER BY created_at DESC, revision DESC))[1] AS last_reason,
              count(*) FILTER (WHERE status IN (${UNBILLED}))::int AS unbilled
         FROM ${PG_TABLES.billingPushes}
        WHERE workspace_id = $1 AND created_at >= now() - make_interval(days => ${LOOKBACK_DAYS})
          AND status NOT IN ('superseded', 'dry_run')
        GROUP BY event_name ORDER BY event_name`,
      [workspaceId],
    );
    return rows;
  }
}

async function metersByName(stripe: Stripe): Promise<Map<string, Stripe.Billing.Meter>> {
  const out = new Map<string, Stripe.Billing.Meter>();
  for await (const m of stripe.billing.meters.list({ limit: 100 })) {
    // An active meter wins over an inactive one of the same event name.
    if (!out.has(m.event_name) || m.status === 'active') out.set(m.event_name, m);
  }
  return out;
}

function meterCheck(name: string, meters: Map<string, Stripe.Billing.Meter> | null): Check {
  const check = 'stripe_meter_active';
  if (meters === null) return { check, ok: false, reason: 'Stripe is not configured, so no meter can be checked' };
  const m = meters.get(name);
  if (m === undefined) return { check, ok: false, reason: `Stripe has no meter with event_name ${name}` };
  if (m.status !== 'active') return { check, ok: false, reason: `Stripe meter ${m.id} is ${m.status}` };
  return { check, ok: true, reason: `Stripe meter ${m.id} is active` };
}

function lastPushCheck(r: MeterRow): Check {
  const check = 'last_push_succeeded';
  if (r.last_status === 'sent') return { check, ok: true, reason: 'Stripe accepted the last push' };
  if (r.last_status === 'pending' || r.last_status === 'retried')
    return { check, ok: false, reason: `the last push is ${r.last_status}, not yet accepted by Stripe` };
  return { check, ok: false, reason: `the last push is ${r.last_status}: ${r.last_reason ?? 'no reason recorded'}` };
}

function unbilledCheck(r: MeterRow): Check {
  const check = 'no_unbillable_rows';
  if (r.unbilled === 0) return { check, ok: true, reason: `no unbilled rows in the last ${LOOKBACK_DAYS} days` };
  return {
    check,
    ok: false,
    reason: `${r.unbilled} rows in the last ${LOOKBACK_DAYS} days were not billed (unbillable, rejected or failed): see the dashboard's billing page`,
  };
}
