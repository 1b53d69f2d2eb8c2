export { MeterdClient } from './client.js';
export { MeterdRequestError, QuotaExhaustedError, ClientClosedError } from './errors.js';
export type { ClientOptions, MeterEvent, MeterResult, Quota, RetryInfo } from './types.js';
