/**
 * Stripe refuses meter events whose timestamp is more than 35 days old; an hour of margin covers
 * the time between planning and sending. A difference in an older window can no longer be billed
 * and is recorded as `unbillable` instead.
 */
export const STRIPE_MAX_AGE_S = 35 * 86_400 - 3_600;
