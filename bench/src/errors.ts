import { MeterdError } from '@meterd/core/errors';

/**
 * What stops a benchmark before or during a run, each with a stable code so scripts wrapping the
 * CLI can branch on it. The message is what an operator reads: it names the target and the fix.
 */
export type BenchErrorCode =
  | 'METERD_BENCH_USAGE'
  | 'METERD_BENCH_TARGET_UNREACHABLE'
  | 'METERD_BENCH_KEY_REFUSED'
  | 'METERD_BENCH_TARGET_REFUSED'
  | 'METERD_BENCH_CHILD_FAILED'
  | 'METERD_BENCH_NOT_BUILT';

export class BenchError extends MeterdError {
  constructor(code: BenchErrorCode, message: string, cause?: unknown) {
    super(code, message, cause === undefined ? {} : { cause });
  }
}
