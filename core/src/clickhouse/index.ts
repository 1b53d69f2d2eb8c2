export {
  createClickHouse,
  pinnedSettings,
  clickHouseErrorCode,
  ClickHouseError,
  type ClickHouseFlavor,
  type ClickHouseOptions,
} from './client.js';
export { ident, lit, dateTimeLit, toClickHouseDateTime } from './sql.js';
export { createRawInserter, type RawInsertTarget } from './raw-insert.js';
export { WINNER, winningEventsSql } from './events.js';
export {
  batchRecord,
  createBatchRecorder,
  insertEventBatch,
  recordBatchWith,
  type BatchPartial,
  type BatchRecord,
  type BatchWindow,
  type EventRow,
  type RecordBatch,
} from './batches.js';
