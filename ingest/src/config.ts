import { availableParallelism } from 'node:os';
import {
  addressList,
  bool,
  authVars,
  loadConfig,
  redisKeyPrefixVar,
  storeVars,
  str,
  int,
  oneOf,
  type ConfigOf,
} from '@meterd/core/config';

export const ingestVars = {
  ...storeVars,
  INGEST_HOST: str('Address ingest listens on.', '127.0.0.1'),
  INGEST_PORT: int(
    'Port of the ingest HTTP server (/api/v1/meter, /api/v1/meter/batch, /healthz, /readyz, /metrics).',
    8081,
    0,
    65535,
  ),
  INGEST_THREADS: {
    doc: 'uWebSockets.js threads sharing the port (SO_REUSEPORT); `auto` = one per core.',
    default: 'auto',
    parse: (s: string): number => {
      if (s === 'auto') return availableParallelism();
      return int('', 1, 1, 64).parse(s);
    },
  },
  ...authVars,
  SPOOL_DIR: str('Folder of the write-ahead spool (one sub-folder per thread). Must be on durable storage.', '.spool'),
  INGEST_INSTANCE: {
    doc: "This ingest's stable name: its spool is registered under it in Postgres (`ingest_spools`) and its threads' shipped-through marks in Redis start with it. Set it to the StatefulSet pod name (infra/k8s does, `meterd-ingest-0`); two processes running at once must not share it. Default: the host name and a hash of SPOOL_DIR's absolute path, so several local processes with their own spools never collide.",
    default: '',
    parse: (s: string): string => {
      if (s !== '' && !/^[A-Za-z0-9._-]{1,128}$/.test(s))
        throw new Error('must be 1-128 letters, digits, `.`, `_` or `-`');
      return s;
    },
  },
  INGEST_ACK: oneOf(
    'When a 202 is sent. `spool` (default): after the rows are durable in the local write-ahead spool (SPOOL_FSYNC), which ships them to ClickHouse later; needs a disk that outlives the process. `clickhouse`: after the rows of the group commit are inserted into ClickHouse (one insert at a time, gathering every request that arrived meanwhile); for ephemeral disks, where a lost volume must lose nothing. See docs/deploy.md.',
    'spool',
    ['spool', 'clickhouse'] as const,
  ),
  SPOOL_ACCEPT_LOST_VOLUME: bool(
    "`true`: start on an empty spool even though Postgres says this instance's previous spool may have held unshipped rows (its volume was lost or replaced). Prefer `npm run spool:lost -- --instance <name>`, which accounts for the lost rows and lets their retries be stored before it clears the refusal (docs/deploy.md).",
    false,
  ),
  SPOOL_FSYNC: oneOf(
    'When a 202 is sent. `always`: after an fdatasync covering the event (pipelined group commit); survives power loss. `interval`: after the write reaches the kernel, with an fdatasync every SPOOL_FSYNC_INTERVAL_MS; survives kill -9 of ingest, a power loss may lose the last interval. `never`: no fdatasync (benchmarks on throwaway disks only). See docs/architecture.md.',
    'always',
    ['always', 'interval', 'never'] as const,
  ),
  SPOOL_FSYNC_INTERVAL_MS: int(
    'With SPOOL_FSYNC=interval: how often written spool bytes are synced (the most a power loss can take).',
    100,
    1,
    10_000,
  ),
  SPOOL_MAX_BYTES: int(
    'Unshipped spool bytes per thread past which ingest answers 503 instead of accepting more.',
    1 << 30,
    1 << 20,
    Number.MAX_SAFE_INTEGER,
  ),
  SPOOL_SEGMENT_BYTES: int('Size at which the spool starts a new segment file.', 64 << 20, 1 << 16, 1 << 30),
  SHIP_BATCH_ROWS: int('Most rows per ClickHouse insert.', 50_000, 1, 1_000_000),
  SHIP_INTERVAL_MS: int(
    "How often the spool is shipped to ClickHouse when a batch has not filled. Each ship round carries every thread's batch as one insert into events and one into each batch-record table: 1000 / this inserts per second per table per ingest process, whatever INGEST_THREADS is (keep it at or above 500: ClickHouse wants about one insert per second per table).",
    500,
    10,
    60_000,
  ),
  ...redisKeyPrefixVar,
  DEDUPE_WINDOW_SECONDS: int(
    "How long an idempotency key is remembered (default 35 days, Stripe's meter event window).",
    35 * 86_400,
    60,
    400 * 86_400,
  ),
  DEDUPE_HOT_SECONDS: int(
    'How long a committed idempotency key keeps its whole row in Redis (~200 bytes), so a retry is answered without ClickHouse. Keep it above the longest time events wait in the spool; after it, the key costs ~30 bytes and a retry reads its row from ClickHouse (docs/redis.md).',
    600,
    1,
    86_400,
  ),
  DEDUPE_PENDING_TTL_MS: int(
    'How long a claimed-but-unstored idempotency key blocks retries (409) before it is freed.',
    10_000,
    100,
    300_000,
  ),
  AUTH_FAILURE_BURST: int(
    'Unknown API keys one client address may send at once before ingest stops looking its keys up (429 too_many_auth_failures); per ingest thread.',
    20,
    1,
    1_000_000,
  ),
  AUTH_FAILURE_RATE_PER_SECOND: int(
    'Unknown API keys per second a client address may send after its burst (the budget refills at this rate).',
    2,
    1,
    1_000_000,
  ),
  TRUSTED_PROXIES: addressList(
    'HTTP proxies (comma-separated IPs/CIDRs) that may name the client for the per-address limit on failed authentication, by X-Forwarded-For (walked from the right past trusted hops) or a PROXY protocol header; default none, so a client cannot pick its address by sending either. IPv6 clients count per /64.',
    '',
  ),
  MAX_BODY_BYTES: int('Largest body of POST /api/v1/meter (413 beyond).', 16 << 10, 1 << 10, 1 << 20),
  MAX_BATCH_BODY_BYTES: int('Largest body of POST /api/v1/meter/batch (413 beyond).', 1 << 20, 1 << 12, 16 << 20),
} as const;

export type IngestConfig = ConfigOf<typeof ingestVars>;

export function loadIngestConfig(env: NodeJS.ProcessEnv = process.env): IngestConfig {
  return loadConfig(ingestVars, env);
}
