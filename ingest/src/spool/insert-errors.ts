import { clickHouseErrorCode } from '@meterd/core/clickhouse';
import { SpoolRowEncodingError } from './errors.js';

/**
 * ClickHouse error codes that reject the data itself, the same way on every attempt: retrying the
 * batch can never succeed, so the shipper isolates the offending rows instead (ErrorCodes.cpp):
 * 6 CANNOT_PARSE_TEXT, 25 CANNOT_PARSE_ESCAPE_SEQUENCE (18.16's "Cannot parse JSON string"),
 * 26 CANNOT_PARSE_QUOTED_STRING, 27 CANNOT_PARSE_INPUT_ASSERTION_FAILED, 32 ATTEMPT_TO_READ_AFTER_EOF,
 * 38 CANNOT_PARSE_DATE, 41 CANNOT_PARSE_DATETIME, 53 TYPE_MISMATCH, 62 SYNTAX_ERROR,
 * 69 ARGUMENT_OUT_OF_BOUND, 70 CANNOT_CONVERT_TYPE, 72 CANNOT_PARSE_NUMBER, 117 INCORRECT_DATA
 * (e.g. an unknown JSONEachRow field), 131 TOO_LARGE_STRING_SIZE.
 * Left out on purpose: 216 is QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING (transient), and table-level
 * errors (60 UNKNOWN_TABLE, 16 NO_SUCH_COLUMN_IN_TABLE, 81 UNKNOWN_DATABASE) fail every row alike:
 * quarantining would empty the spool into the quarantine during a schema mistake, so they retry.
 */
const ROW_REJECTED = new Set([6, 25, 26, 27, 32, 38, 41, 53, 62, 69, 70, 72, 117, 131]);

/** What a row the shipper could not even encode counts as: ClickHouse's own answer to unparsable input. */
const ENCODING_REJECTED = 27;

/** The ClickHouse code when `err` says the rows themselves were refused; undefined for transient errors. */
export function rowRejectionCode(err: unknown): number | undefined {
  if (err instanceof SpoolRowEncodingError) return ENCODING_REJECTED;
  // ClickHouseQueryError puts the server's text in its message; its cause keeps the raw text too.
  const code = clickHouseErrorCode(err) ?? clickHouseErrorCode((err as { cause?: unknown })?.cause);
  return code !== undefined && ROW_REJECTED.has(code) ? code : undefined;
}
