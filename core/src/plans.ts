/**
 * Plans and their quotas. Events are counted per calendar month (UTC), the billing period.
 * Free's 500 events and the handler counts come from the API contract (docs/api.md); growth's and
 * scale's event quotas are meterd's choice, documented in the README. `null` means unlimited.
 */
export const PLANS = ['free', 'growth', 'scale', 'enterprise'] as const;
export type Plan = (typeof PLANS)[number];

export interface PlanQuota {
  eventsPerPeriod: number | null;
  handlers: number | null;
}

export const PLAN_QUOTAS: Readonly<Record<Plan, PlanQuota>> = Object.freeze({
  free: { eventsPerPeriod: 500, handlers: 1 },
  growth: { eventsPerPeriod: 100_000, handlers: 3 },
  scale: { eventsPerPeriod: 5_000_000, handlers: 10 },
  enterprise: { eventsPerPeriod: null, handlers: null },
});

/** Plans bought through Stripe (a price whose lookup_key is the plan's name); free needs no payment. */
export const PAID_PLANS = ['growth', 'scale', 'enterprise'] as const satisfies readonly Plan[];
export type PaidPlan = (typeof PAID_PLANS)[number];

export function isPaidPlan(s: unknown): s is PaidPlan {
  return typeof s === 'string' && (PAID_PLANS as readonly string[]).includes(s);
}

/** The billing period an instant falls in: `YYYYMM` of the UTC calendar month. */
export function periodOf(ms: number): string {
  const d = new Date(ms);
  const m = d.getUTCMonth() + 1;
  return `${d.getUTCFullYear()}${m < 10 ? '0' : ''}${m}`;
}
