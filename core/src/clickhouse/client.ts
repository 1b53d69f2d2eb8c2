import { ClickHouseLogLevel, createClient, type ClickHouseClient, type ClickHouseSettings } from '@clickhouse/client';
import { MeterdError } from '../errors/meterd-error.js';

/**
 * One place that creates ClickHouse clients, with settings pinned so that 18.16 (Debian's package,
 * what CI runs) and current servers (chDB 26.x, production) answer alike: 64-bit integers quoted as
 * strings in JSON (so Int64 money never passes through a lossy double), and on current servers
 * synchronous inserts (chDB defaults to async_insert=1, which would acknowledge before the data is
 * queryable). Settings that 18.16 does not know must not be sent to it: it rejects unknown settings.
 */
export type ClickHouseFlavor = 'server-18' | 'current';

export interface ClickHouseOptions {
  url: URL;
  database: string;
  user: string;
  password: string;
  requestTimeoutMs?: number;
  /** Merged over the pinned settings (clusterSettings). */
  settings?: ClickHouseSettings;
}

/** The CLICKHOUSE_* settings every service reads (core's storeVars). */
export interface ClickHouseEnv {
  CLICKHOUSE_URL: URL;
  CLICKHOUSE_DATABASE: string;
  CLICKHOUSE_USER: string;
  CLICKHOUSE_PASSWORD: string;
  CLICKHOUSE_CLUSTER?: string;
  CLICKHOUSE_INSERT_QUORUM?: number;
}

export function pinnedSettings(flavor: ClickHouseFlavor): ClickHouseSettings {
  const common: ClickHouseSettings = { output_format_json_quote_64bit_integers: 1 };
  return flavor === 'current' ? { ...common, async_insert: 0, date_time_input_format: 'basic' } : common;
}

/**
 * Settings for a cluster (CLICKHOUSE_CLUSTER), merged over the pinned ones; none on one server.
 * - insert_distributed_sync: an insert into a Distributed table returns only once every shard
 *   stored its rows (otherwise the initiator queues them on its own disk and answers at once: a
 *   checkpoint or watermark moved on that answer could point past rows a shard does not have yet).
 * - insert_quorum: each shard's replica acknowledges only when this many replicas hold the part;
 *   checked on 18.16 through a synchronous Distributed insert (a replica down: Code 319/159 after
 *   insert_quorum_timeout). insert_quorum_timeout stays below the clients' request timeout.
 * - distributed_product_mode=local: an `IN (SELECT … FROM events)` inside a query on a Distributed
 *   table reads each shard's local table (18.16 refuses double-distributed subqueries by default);
 *   exact because every row of a workspace lives on one shard.
 * - optimize_move_to_prewhere=0: 18.16 fails a query on a Distributed table whose select list is
 *   constants only (`SELECT 1 FROM events WHERE … LIMIT 1`, ingest's dedupe recovery) once a
 *   condition is moved to PREWHERE ("Cannot find column `greaterOrEquals(…)` in source stream").
 */
export function clusterSettings(
  cfg: Pick<ClickHouseEnv, 'CLICKHOUSE_CLUSTER' | 'CLICKHOUSE_INSERT_QUORUM'>,
): ClickHouseSettings {
  if (cfg.CLICKHOUSE_CLUSTER === undefined || cfg.CLICKHOUSE_CLUSTER === '') return {};
  const quorum = cfg.CLICKHOUSE_INSERT_QUORUM ?? 2;
  return {
    insert_distributed_sync: 1,
    ...(quorum > 1 ? { insert_quorum: String(quorum), insert_quorum_timeout: CLUSTER_QUORUM_TIMEOUT_MS } : {}),
    distributed_product_mode: 'local',
    optimize_move_to_prewhere: 0,
  };
}

/** How long a shard waits for its quorum before failing the insert (the client then retries). */
export const CLUSTER_QUORUM_TIMEOUT_MS = 20_000;

export function createClickHouse(opts: ClickHouseOptions): ClickHouseClient {
  return createClient({
    url: opts.url.origin + opts.url.pathname.replace(/\/$/, ''),
    database: opts.database,
    username: opts.user,
    password: opts.password,
    request_timeout: opts.requestTimeoutMs ?? 30_000,
    // A socket the server has closed (18.16's keep_alive_timeout is 3 s) must never be reused: that
    // request fails with "socket hang up". The client's default 2.5 s leaves 0.5 s, which an event
    // loop held up on a loaded machine overruns (a CI failure); stale sockets are also dropped when
    // a request looks for one, not only by their timer.
    keep_alive: { idle_socket_ttl: 1_500, eagerly_destroy_stale_sockets: true },
    // 18.16 does not understand the client's compression negotiation reliably; payloads are local.
    compression: { request: false, response: false },
    clickhouse_settings: { ...pinnedSettings('server-18'), ...opts.settings },
    // Callers wrap and log failures with context (ClickHouseQueryError); the client's own multi-line
    // dumps to the console would double every error and bypass the structured log.
    log: { level: ClickHouseLogLevel.OFF },
  });
}

/**
 * A client for the configured server. `database` overrides CLICKHOUSE_DATABASE (migrations connect
 * to `default` to create it first).
 */
export function clickHouseFromConfig(
  cfg: ClickHouseEnv,
  opts: { database?: string; requestTimeoutMs?: number } = {},
): ClickHouseClient {
  return createClickHouse({
    url: cfg.CLICKHOUSE_URL,
    database: opts.database ?? cfg.CLICKHOUSE_DATABASE,
    user: cfg.CLICKHOUSE_USER,
    password: cfg.CLICKHOUSE_PASSWORD,
    settings: clusterSettings(cfg),
    ...(opts.requestTimeoutMs === undefined ? {} : { requestTimeoutMs: opts.requestTimeoutMs }),
  });
}

/** The numeric server error code: 18.16 puts it only in the text ("Code: 60, e.displayText() = …"). */
export function clickHouseErrorCode(err: unknown): number | undefined {
  const e = err as { code?: unknown; message?: unknown };
  if (typeof e?.code === 'string' && /^\d+$/.test(e.code)) return Number(e.code);
  const m = typeof e?.message === 'string' ? /Code: (\d+)/.exec(e.message) : null;
  return m ? Number(m[1]) : undefined;
}

/**
 * Server codes that refuse a statement itself, the same way on every attempt (ErrorCodes.cpp):
 * 36 BAD_ARGUMENTS, 43 ILLEGAL_TYPE_OF_ARGUMENT, 53 TYPE_MISMATCH, 62 SYNTAX_ERROR (also 18.16's
 * "Max query size exceeded"), 69 ARGUMENT_OUT_OF_BOUND, 70 CANNOT_CONVERT_TYPE, 158 TOO_MANY_ROWS,
 * 307 TOO_MANY_BYTES, 386 NO_COMMON_TYPE, 396 TOO_MANY_ROWS_OR_BYTES (the last three: the
 * operator's read limits, which the same statement passes again only once they change).
 * Left out on purpose: schema errors (16, 47, 60, 81), which a migration that has not run yet
 * explains and fixes; 159 TIMEOUT_EXCEEDED and 241 MEMORY_LIMIT_EXCEEDED, which depend on what
 * else the server is doing.
 */
const STATEMENT_REFUSED = new Set([36, 43, 53, 62, 69, 70, 158, 307, 386, 396]);

/** The server code when ClickHouse refused the statement itself (STATEMENT_REFUSED); undefined otherwise. */
export function statementRefusedCode(err: unknown): number | undefined {
  // ClickHouseQueryError carries the code; a raw client error only in its text (18.16).
  const code =
    (err instanceof ClickHouseQueryError ? err.serverCode : undefined) ??
    clickHouseErrorCode(err) ??
    clickHouseErrorCode((err as { cause?: unknown })?.cause);
  return code !== undefined && STATEMENT_REFUSED.has(code) ? code : undefined;
}

export class ClickHouseQueryError extends MeterdError {
  readonly serverCode: number | undefined;
  constructor(action: string, cause: unknown) {
    super('METERD_CLICKHOUSE_FAILED', `${action}: ${(cause as Error)?.message ?? String(cause)}`, {
      retryable: true,
      cause,
    });
    this.serverCode = clickHouseErrorCode(cause);
  }
}
