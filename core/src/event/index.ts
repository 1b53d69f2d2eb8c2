export {
  validateMeterEvent,
  parseMeterJson,
  Rejection,
  MAX_EVENT_AGE_MS,
  type MeterEvent,
  type StoredEvent,
} from './meter-event.js';
export { parseRfc3339, formatRfc3339 } from './time.js';
