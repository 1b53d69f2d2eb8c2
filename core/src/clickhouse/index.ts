export {
  createClickHouse,
  clickHouseFromConfig,
  pinnedSettings,
  clusterSettings,
  CLUSTER_QUORUM_TIMEOUT_MS,
  clickHouseErrorCode,
  statementRefusedCode,
  ClickHouseQueryError,
  type ClickHouseFlavor,
  type ClickHouseOptions,
  type ClickHouseEnv,
} from './client.js';
export { ident, lit, dateTimeLit, toClickHouseDateTime } from './sql.js';
export { createRawInserter, type RawInsertTarget } from './raw-insert.js';
export { winningEventsSql } from './events.js';
export {
  batchRecord,
  batchRecordOf,
  batchWinners,
  createBatchRecorder,
  insertEventBatch,
  recordBatchWith,
  type BatchPartial,
  type BatchRecord,
  type BatchWindow,
  type EventRow,
  type RecordBatch,
} from './batches.js';
export { eventRowsToRowBinary, EVENT_ROW_BINARY_COLUMNS } from './row-binary.js';
