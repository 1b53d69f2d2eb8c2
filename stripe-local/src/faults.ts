import { invalid } from './stripe-error.js';

/**
 * Fault switches, set from STRIPE_LOCAL_FAULTS at start or `POST /_faults` at run time. They apply
 * to the meter event routes (v1 events, adjustments, v2 session and stream), where billing-sync's
 * exactly-once promise is tested. Each rate is a probability per request.
 */
export interface Faults {
  /** 500 before anything is stored: the client must retry. */
  error_rate: number;
  /** The event is stored, then 500: the client cannot tell, retries, and must be saved by the identifier. */
  applied_error_rate: number;
  /** The event is stored, then the response never comes (socket destroyed after `timeout_ms`). */
  timeout_rate: number;
  timeout_ms: number;
  /** Every meter request answers 429 until this epoch-ms instant (a 429 storm). */
  rate_limit_until: number;
  /** Share of requests answered 429 outside a storm. */
  rate_limit_rate: number;
  /** One-shot: every session token issued so far expires at once (the switch then resets itself). */
  expire_sessions: boolean;
  /**
   * v1 meter events naming a customer stripe-local does not know are refused at once (400
   * `resource_missing`, "No such customer") instead of accepted and reported later: a synchronous
   * refusal of the kind billing-sync must record as rejected, not failed.
   */
  v1_refuse_unknown_customers: boolean;
  /**
   * Every customer read (`GET /v1/customers/:id`) answers this status, 0 off: 403 as for a
   * restricted key without customer read access, 5xx as in an outage.
   */
  customer_read_status: number;
}

export const NO_FAULTS: Readonly<Faults> = Object.freeze({
  error_rate: 0,
  applied_error_rate: 0,
  timeout_rate: 0,
  timeout_ms: 2_000,
  rate_limit_until: 0,
  rate_limit_rate: 0,
  expire_sessions: false,
  v1_refuse_unknown_customers: false,
  customer_read_status: 0,
});

/** Merges a partial update (JSON from /_faults) over the current faults; `{ "reset": true }` clears. */
export function applyFaults(current: Faults, update: unknown): Faults {
  if (typeof update !== 'object' || update === null || Array.isArray(update))
    throw invalid('faults must be a JSON object');
  const u = update as Record<string, unknown>;
  const next: Faults = u.reset === true ? { ...NO_FAULTS } : { ...current };
  for (const [k, v] of Object.entries(u)) {
    if (k === 'reset') continue;
    if (k === 'rate_limit_storm_ms') {
      if (typeof v !== 'number' || v < 0) throw invalid('rate_limit_storm_ms must be a number of milliseconds', k);
      next.rate_limit_until = Date.now() + v;
      continue;
    }
    if (!(k in NO_FAULTS)) throw invalid(`unknown fault ${k}`, k);
    const expected = typeof NO_FAULTS[k as keyof Faults];
    if (typeof v !== expected) throw invalid(`${k} must be a ${expected}`, k);
    if (
      k === 'customer_read_status' &&
      v !== 0 &&
      !(Number.isInteger(v) && (v as number) >= 400 && (v as number) <= 599)
    )
      throw invalid(`${k} must be 0 or an HTTP error status (400 to 599)`, k);
    if (k.endsWith('_rate') && ((v as number) < 0 || (v as number) > 1)) throw invalid(`${k} must be from 0 to 1`, k);
    (next as unknown as Record<string, unknown>)[k] = v;
  }
  return next;
}
