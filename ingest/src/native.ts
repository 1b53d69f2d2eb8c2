import { createRequire } from 'node:module';
import { MeterdError } from '@meterd/core/errors';

export type UWS = typeof import('uWebSockets.js');

/**
 * Loads uWebSockets.js and refuses to go on unless the native binary loaded. The package's loader
 * silently falls back to a slow pure-JS implementation when the binary does not fit the platform;
 * that fallback has no `getParts`, which is how it is told apart. Ingest's throughput figures
 * (README, Benchmarks) assume the native server.
 */
export function loadNativeUws(): UWS {
  const require = createRequire(import.meta.url);
  const uws = require('uWebSockets.js') as UWS;
  if (typeof (uws as { getParts?: unknown }).getParts !== 'function') {
    throw new MeterdError(
      'METERD_INGEST_UWS_NOT_NATIVE',
      `uWebSockets.js did not load its native binary on Node ${process.version} (${process.platform}/${process.arch}); ` +
        'ingest needs it. Use Node 20.x on glibc ≥ 2.36 (see README).',
    );
  }
  return uws;
}
