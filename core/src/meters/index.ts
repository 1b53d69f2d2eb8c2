export {
  METER_AGGREGATIONS,
  METER_BACKFILL_ERRORS,
  meterBackfillErrorOf,
  meterBackfillErrorText,
  type MeterBackfillError,
  type MeterBackfillErrorCode,
  METER_COLUMNS,
  METER_LIMITS,
  METER_SLUG_RE,
  PROPERTY_KEY_RE,
  PROPERTY_LIMITS,
  meterFromRow,
  metersForBucket,
  type MeterAggregation,
  type MeterDefinition,
  type MeterValueField,
} from './definition.js';
export { METER_WINDOWS, type MeterUsageQuery, type MeterUsageRow, type MeterWindow } from './usage-types.js';
export { MeterCatalog, meterBySlug, metersForBuckets } from './catalog.js';
export {
  batchRecordWithMeters,
  byteCompare,
  meterPartialsFor,
  meterPartials,
  recordMeterPartialsWith,
  type MeterPartial,
  type MeterPartialsOf,
} from './partials.js';
export { METER_INTEGER_PATTERN, meterCurrency, meterGroup, meterValue, meterValueSql, propertyOf } from './value.js';
export { MAX_METER_WINDOWS, readMeterUsage } from './read.js';
export { windowBoundaries } from './zone.js';
export { STRIPE_FORMULA, STRIPE_RESERVED_PAYLOAD_KEYS, billedMeters, stripeBillingProblem } from './stripe.js';
