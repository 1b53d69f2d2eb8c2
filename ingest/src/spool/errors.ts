import { MeterdError } from '@meterd/core/errors';

/** Another live process (or this thread, twice) already writes this spool folder. */
export class SpoolLockedError extends MeterdError {
  constructor(
    readonly dir: string,
    readonly holderPid: number,
    detail: string,
  ) {
    super(
      'METERD_INGEST_SPOOL_LOCKED',
      `spool folder ${dir} is in use by process ${holderPid} (${detail}); two writers on one folder would delete each other's segments. ` +
        'Give each ingest its own SPOOL_DIR, or stop the other process; a lock left by a process that is gone is taken over by itself.',
      { retryable: true },
    );
  }
}

/** The spool folder's lock could not be taken or checked (unreadable lock file, permissions, …). */
export class SpoolLockError extends MeterdError {
  constructor(dir: string, action: string, cause: unknown) {
    super(
      'METERD_INGEST_SPOOL_LOCK_FAILED',
      `${action} of spool folder ${dir} failed: ${(cause as Error)?.message ?? String(cause)}`,
      { cause },
    );
  }
}

/** This writer no longer holds its folder's lock, so it must not delete anything there. */
export class SpoolLockLostError extends MeterdError {
  constructor(dir: string, detail: string) {
    super(
      'METERD_INGEST_SPOOL_LOCK_LOST',
      `the lock of spool folder ${dir} is no longer held by this writer (${detail}); not deleting shipped segments`,
    );
  }
}

/**
 * Spool rows that cannot be encoded as RowBinary (not JSON, a missing field, an integer beyond
 * ±(2^53 − 1), a malformed DateTime): the rows' own fault, like a ClickHouse parse error, so the
 * shipper isolates and quarantines them instead of retrying forever.
 */
export class SpoolRowEncodingError extends MeterdError {
  constructor(cause: unknown) {
    super(
      'METERD_INGEST_SPOOL_ROW_INVALID',
      `spool rows cannot be encoded for ClickHouse: ${(cause as Error)?.message ?? String(cause)}`,
      {
        cause,
      },
    );
  }
}
