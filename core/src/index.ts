export * from './errors/index.js';
export * from './config/index.js';
export * from './clickhouse/index.js';
export * from './keys/index.js';
export * from './event/index.js';
export * from './metrics/index.js';
export * from './store/index.js';
export * from './migrate/index.js';
export * from './contracts/index.js';
export { PLANS, PLAN_QUOTAS, PAID_PLANS, isPaidPlan, periodOf, type PaidPlan, type Plan } from './plans.js';
export { newId, newEventId } from './ids.js';
export { createLogger, type Logger } from './log.js';
export { REPO_ROOT, PG_MIGRATIONS_DIR, CH_MIGRATIONS_DIR } from './paths.js';
export { Authenticator, hasScope, type Principal } from './auth/authenticator.js';
export { addressMatcher, freePort } from './net.js';
export { Loop } from './loop.js';
export { currencyExponent, currencyExponents } from './money/currency.js';
export {
  markRejectedRows,
  METER_ERROR_EVENTS,
  type MeterErrorReport,
  type MeterErrorOutcome,
} from './billing/meter-errors.js';
