import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Authenticator } from '@meterd/core/auth';
import {
  clickHouseFromConfig,
  clusterSettings,
  createBatchRecorder,
  createRawInserter,
  eventRowsToRowBinary,
  EVENT_ROW_BINARY_COLUMNS,
  type RawInsertTarget,
  type RecordBatch,
} from '@meterd/core/clickhouse';
import { CH_TABLES, dedupeShippedKey } from '@meterd/core/contracts';
import { errorBody } from '@meterd/core/errors';
import { createLogger, type Logger } from '@meterd/core/log';
import { Loop } from '@meterd/core/loop';
import { MetricsRegistry, METRICS_CONTENT_TYPE } from '@meterd/core/metrics';
import { addressMatcher } from '@meterd/core/net';
import {
  createPool,
  createRedis,
  pgHealthy,
  redisHealthy,
  RejectionLog,
  type Pool,
  type Redis,
} from '@meterd/core/store';
import type { TemplatedApp, us_listen_socket } from 'uWebSockets.js';
import type { IngestConfig } from './config.js';
import { loadNativeUws } from './native.js';
import { defineIngestMetrics, type IngestMetrics } from './metrics.js';
import { RedisDeduper } from './dedupe/redis.js';
import { ClickHouseStoredRows } from './dedupe/clickhouse.js';
import { DedupeRecovery } from './dedupe/recovery.js';
import { ShippedMarks } from './dedupe/shipped.js';
import { meterPartialsFor, MeterCatalog, type MeterPartialsOf } from '@meterd/core/meters';
import { SpoolWriter, type Spool } from './spool/writer.js';
import { SpoolShipper, type InsertRows, type ShipTogether } from './spool/shipper.js';
import { createEventsInserter } from './spool/row-binary.js';
import { Pipeline } from './pipeline.js';
import { ClickHouseAck } from './ack-clickhouse.js';
import { ingestInstance } from './spool/identity.js';
import { recommitUnshipped } from './dedupe/recommit.js';
import { unshippedLines } from './spool/unshipped.js';
import { MeterRoutes } from './http/meter.js';
import { AuthFailureLimiter } from './http/auth-failures.js';

export interface IngestThread {
  /** The port actually bound (useful with INGEST_PORT=0 in tests). */
  port: number;
  metrics: IngestMetrics;
  shipper: SpoolShipper;
  /** /readyz answers 503 from now on; everything else is still served. */
  markDraining(): void;
  /** Readiness off, stops accepting, waits for requests in flight, ships what it can, closes connections. */
  close(flushWithinMs?: number): Promise<void>;
}

export interface ThreadOptions {
  /** This thread's number; its spool lives in SPOOL_DIR/t<index>. */
  index: number;
  registry: MetricsRegistry;
  /** Test seams: wrap the spool (fault injection) or replace the ClickHouse insert. */
  wrapSpool?: (s: Spool) => Spool;
  insertRows?: InsertRows;
  /** Dedupe's clock (tests move it weeks ahead) and key hash (tests shorten it to force collisions). */
  dedupeClock?: () => number;
  dedupeHash?: (key: string) => string;
  /** Prefix of Redis keys (tests give each run its own). */
  redisPrefix?: string;
  /**
   * Spool folders of threads that no longer exist (INGEST_THREADS was lowered). Their events were
   * acknowledged, so this thread ships them and then removes the folders.
   */
  adopt?: string[];
  /** Ship in the process's ship rounds (spool/ship-rounds.ts) rather than on this thread's own timer. */
  together?: ShipTogether;
  log?: Logger;
}

/** Where ingest inserts: the thread's shipper, and the main thread's ship rounds. */
export function clickHouseTarget(cfg: IngestConfig): RawInsertTarget {
  return {
    url: cfg.CLICKHOUSE_URL,
    database: cfg.CLICKHOUSE_DATABASE,
    user: cfg.CLICKHOUSE_USER,
    password: cfg.CLICKHOUSE_PASSWORD,
    // On a cluster: synchronous Distributed inserts with a quorum per shard, so the checkpoint
    // moves only once the rows are on CLICKHOUSE_INSERT_QUORUM replicas of their shard.
    settings: clusterSettings(cfg),
  };
}

/** Builds one ingest thread: config already validated, stores connected, routes registered, listening. */
export async function startIngestThread(cfg: IngestConfig, o: ThreadOptions): Promise<IngestThread> {
  const uws = loadNativeUws();
  const log = o.log ?? createLogger('ingest', cfg.LOG_LEVEL).child({ thread: o.index });
  const metrics = defineIngestMetrics(o.registry);
  const pool: Pool = createPool(cfg.DATABASE_URL, 4, { statementTimeoutMs: cfg.DATABASE_STATEMENT_TIMEOUT_MS });
  // A stalled Redis must turn into fast 503s, not requests that hang (and claims that outlive their TTL).
  const redis: Redis = createRedis(cfg, { commandTimeout: 2_000 });
  const sub: Redis = createRedis(cfg, { enableAutoPipelining: false });
  for (const r of [redis, sub]) r.on('error', (err) => log.debug({ err }, 'redis connection error'));

  const deduper = new RedisDeduper(redis, {
    windowSeconds: cfg.DEDUPE_WINDOW_SECONDS,
    pendingTtlMs: cfg.DEDUPE_PENDING_TTL_MS,
    hotSeconds: cfg.DEDUPE_HOT_SECONDS,
    roundTrips: metrics.dedupeRoundTrips,
    prefix: o.redisPrefix ?? cfg.REDIS_KEY_PREFIX,
    ...(o.dedupeClock === undefined ? {} : { clock: o.dedupeClock }),
    ...(o.dedupeHash === undefined ? {} : { hash: o.dedupeHash }),
  });
  const writer = SpoolWriter.open(join(resolve(cfg.SPOOL_DIR), `t${o.index}`), {
    segmentBytes: cfg.SPOOL_SEGMENT_BYTES,
    fsync: cfg.SPOOL_FSYNC,
    fsyncIntervalMs: cfg.SPOOL_FSYNC_INTERVAL_MS,
    fsyncs: metrics.spoolFsyncs,
    fsyncErrors: metrics.spoolFsyncErrors,
    commitSeconds: metrics.commitSeconds,
    log,
  });
  const target = clickHouseTarget(cfg);
  const insert = o.insertRows ?? createEventsInserter(target);
  // Batches are recorded for the aggregator only where they really reach ClickHouse's events.
  const record = o.insertRows === undefined ? createBatchRecorder(target) : undefined;
  const meterPartials =
    record === undefined
      ? undefined
      : meterPartialsFor(
          new MeterCatalog(pool, {
            onLoadError: (err) => log.warn({ err }, 'loading meter definitions failed; shipping without new partials'),
          }),
        );
  const shipper = new SpoolShipper(writer, insert, {
    batchRows: cfg.SHIP_BATCH_ROWS,
    intervalMs: cfg.SHIP_INTERVAL_MS,
    metrics,
    log,
    record,
    // Rounds ship the record too: only where this thread records its batches itself.
    together: record === undefined ? undefined : o.together,
    meterPartials,
  });
  const instance = ingestInstance(cfg);
  const spool = o.wrapSpool ? o.wrapSpool(writer) : writer;
  // INGEST_ACK=clickhouse: the spool above only ships what an earlier INGEST_ACK=spool run left.
  const accept: Spool =
    cfg.INGEST_ACK === 'clickhouse'
      ? ackInClickHouse(
          cfg,
          target,
          record,
          meterPartials,
          `${instance}:t${o.index}:${randomBytes(4).toString('hex')}`,
          metrics,
        )
      : new SpoolLimit(spool, shipper, cfg.SPOOL_MAX_BYTES);
  const ch = clickHouseFromConfig(cfg, { requestTimeoutMs: 2_000 });
  const storedRows = new ClickHouseStoredRows(ch);
  const markSpool = () => {
    const end = writer.durableEnd;
    return () => shipper.unshippedBytes <= writer.bytesAfter(end);
  };
  const shippedMarks = new ShippedMarks(redis, {
    key: dedupeShippedKey(o.redisPrefix ?? cfg.REDIS_KEY_PREFIX),
    // The spool's folder, which one live thread at a time can hold (its lock): a thread restarted on
    // it takes over the field its killed predecessor left, rather than that field holding back
    // recoveries until it goes stale. Prefixed by the instance: `npm run spool:lost` finds a lost
    // volume's marks by it (spool/identity-lost.ts).
    id: `${instance}:${writer.dir}`,
    markSpool,
    lastClaimAt: () => deduper.lastClaimAt,
    // A claim is acknowledged within DEDUPE_PENDING_TTL_MS / 2 or answered 503; 1 s for the spool write.
    inFlightMs: cfg.DEDUPE_PENDING_TTL_MS / 2 + 1_000,
    hotSeconds: cfg.DEDUPE_HOT_SECONDS,
    intervalMs: 1_000,
    log,
  }).start();
  // Recovery reads whole days of a workspace's sort key: a timeout for scans, not for lookups.
  const chScan = clickHouseFromConfig(cfg, { requestTimeoutMs: 60_000 });
  const recovery = new DedupeRecovery(deduper, storedRows, new ClickHouseStoredRows(chScan), {
    windowSeconds: cfg.DEDUPE_WINDOW_SECONDS,
    shipped: shippedMarks,
    drainMs: 4_000,
    log,
    rebuilds: metrics.quotaRebuilds,
    failures: metrics.dedupeRecoveryFailures,
  });
  const pipeline = new Pipeline(
    deduper,
    storedRows,
    recovery,
    shippedMarks,
    accept,
    metrics,
    log,
    cfg.DEDUPE_PENDING_TTL_MS / 2,
  );
  const auth = new Authenticator(pool, sub, cfg.KEY_CACHE_TTL_MS, cfg.DEPLOY_API_KEY);
  const rejections = new RejectionLog(redis, o.redisPrefix ?? cfg.REDIS_KEY_PREFIX, 1_000, (err) =>
    log.warn({ err }, 'recording rejected events for the explorer failed'),
  );
  const routes = new MeterRoutes(auth, pipeline, deduper, metrics, log, {
    maxBodyBytes: cfg.MAX_BODY_BYTES,
    maxBatchBodyBytes: cfg.MAX_BATCH_BODY_BYTES,
    authFailures: new AuthFailureLimiter(cfg.AUTH_FAILURE_BURST, cfg.AUTH_FAILURE_RATE_PER_SECOND),
    trustedProxy: addressMatcher(cfg.TRUSTED_PROXIES),
    rejections,
  });
  const health = new Health(redis, pool, shipper, cfg.SPOOL_MAX_BYTES, log);
  try {
    const repaired = await recommitUnshipped(unshippedLines(writer), deduper);
    if (repaired > 0) log.info({ rows: repaired }, 're-committed the dedupe keys of unshipped spool rows');
  } catch (err) {
    // Redis is down at start: the thread still starts (and ships), and the window this repair
    // closes stays open for these rows only: a retry after their claims expire is stored again,
    // where the events table and every reader's grouping by the triple collapse it.
    log.warn({ err }, 'could not re-commit the dedupe keys of unshipped spool rows');
  }

  const app: TemplatedApp = uws.App();
  app
    .post('/api/v1/meter', (res, req) => routes.handle(res, req, false))
    .post('/api/v1/meter/batch', (res, req) => routes.handle(res, req, true))
    .get('/healthz', (res) => {
      res.writeStatus('200 OK').writeHeader('content-type', 'application/json').end('{"status":"ok"}');
    })
    .get('/readyz', (res) => {
      const r = health.report();
      res
        .writeStatus(r.ready ? '200 OK' : '503 Service Unavailable')
        .writeHeader('content-type', 'application/json')
        .end(JSON.stringify(r));
    })
    .get('/metrics', (res) => {
      res.writeHeader('content-type', METRICS_CONTENT_TYPE).end(o.registry.render());
    })
    .any('/api/v1/meter', methodNotAllowed)
    .any('/api/v1/meter/batch', methodNotAllowed)
    .any('/*', (res) => {
      metrics.requests.other!.inc();
      res
        .writeStatus('404 Not Found')
        .writeHeader('content-type', 'application/json')
        .end(errorBody('not_found', 'no such route'));
    });

  const listenSocket = await new Promise<us_listen_socket>((resolvePromise, reject) => {
    app.listen(cfg.INGEST_HOST, cfg.INGEST_PORT, (s) =>
      s ? resolvePromise(s) : reject(new Error(`ingest could not listen on ${cfg.INGEST_HOST}:${cfg.INGEST_PORT}`)),
    );
  });
  const port = uws.us_socket_local_port(listenSocket);
  shipper.start();
  health.start();
  const adopted = (o.adopt ?? []).flatMap((dir) => {
    try {
      return [shipOrphan(dir, insert, record, meterPartials, cfg, log)];
    } catch (err) {
      // Still owned by a live process (an old instance draining on the same volume): leave it.
      if ((err as { code?: string }).code !== 'METERD_INGEST_SPOOL_LOCKED') throw err;
      log.warn({ err, dir }, 'orphaned spool is in use by another process; not adopting it');
      return [];
    }
  });

  return {
    port,
    metrics,
    shipper,
    markDraining: () => health.markDraining(),
    async close(flushWithinMs = 5_000) {
      health.markDraining();
      uws.us_listen_socket_close(listenSocket);
      routes.draining = true;
      const deadline = Date.now() + 10_000;
      while (routes.tracker.inflight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      await health.stop();
      await pipeline.close();
      recovery.close();
      await rejections.close().catch((err: unknown) => log.warn({ err }, 'writing the last rejected events failed'));
      await Promise.all(adopted.map((a) => a.stop()));
      await shipper.stop(flushWithinMs);
      await shippedMarks
        .stop()
        .catch((err: unknown) => log.warn({ err }, 'removing this thread from the shipped marks failed'));
      await writer.close();
      await Promise.allSettled([redis.quit(), sub.quit(), pool.end(), ch.close(), chScan.close()]);
      // Closes every keep-alive connection too, so the thread's loop empties and it ends on its own.
      // (A worker torn down while uWS handles are open aborts the whole process.) The method exists
      // in this uWS build but is missing from its bundled type definitions.
      (app as TemplatedApp & { close(): void }).close();
    },
  };
}

/**
 * The accept path of INGEST_ACK=clickhouse (ack-clickhouse.ts): the same RowBinary insert and batch
 * record as the shipper's (`record` is left out where tests replace the insert), each bounded by
 * half the pending-claim TTL so that a slow insert is answered 503 (and its claims released)
 * rather than outliving the claims.
 */
function ackInClickHouse(
  cfg: IngestConfig,
  target: RawInsertTarget,
  record: RecordBatch | undefined,
  meterPartials: MeterPartialsOf | undefined,
  batchPrefix: string,
  metrics: IngestMetrics,
): Spool {
  const bounded = { ...target, timeoutMs: cfg.DEDUPE_PENDING_TTL_MS / 2 };
  const post = createRawInserter(bounded, CH_TABLES.events, EVENT_ROW_BINARY_COLUMNS, 'RowBinary');
  const ackRecord = record === undefined ? undefined : createBatchRecorder(bounded);
  return new ClickHouseAck(
    (rows) => post(eventRowsToRowBinary(rows)),
    ackRecord,
    batchPrefix,
    { commitSeconds: metrics.commitSeconds, insertSeconds: metrics.shipSeconds, insertedRows: metrics.shippedRows },
    meterPartials,
  );
}

/** Ships a dead thread's spool to the end, then deletes the folder. */
function shipOrphan(
  dir: string,
  insert: InsertRows,
  record: RecordBatch | undefined,
  meterPartials: MeterPartialsOf | undefined,
  cfg: IngestConfig,
  log: Logger,
): { stop(): Promise<void> } {
  const writer = SpoolWriter.open(dir, { segmentBytes: cfg.SPOOL_SEGMENT_BYTES, fsync: 'always' });
  // Its gauges would overwrite this thread's: give it a registry of its own and log instead.
  const shipper = new SpoolShipper(writer, insert, {
    batchRows: cfg.SHIP_BATCH_ROWS,
    intervalMs: cfg.SHIP_INTERVAL_MS,
    metrics: defineIngestMetrics(new MetricsRegistry()),
    log,
    record,
    // A dead thread's batches are batches like any other: the meters' open hours need their partials.
    meterPartials,
  });
  log.info({ dir, unshipped_bytes: shipper.unshippedBytes }, 'shipping the spool of a thread that no longer exists');
  shipper.start();
  let done = false;
  // Polls until the spool is empty, then stops the shipper and removes the folder, once.
  const watch = new Loop(
    async () => {
      if (shipper.unshippedBytes > 0) return;
      await shipper.stop();
      await writer.close();
      // Rows ClickHouse refused are kept for an operator to replay: never delete a quarantine.
      if (!existsSync(join(dir, 'quarantine'))) rmSync(dir, { recursive: true, force: true });
      done = true;
      log.info({ dir }, 'orphaned spool shipped and removed');
      return null;
    },
    { intervalMs: 200, onError: (err) => log.error({ err, dir }, 'finishing an orphaned spool failed') },
  ).start(200);
  return {
    async stop() {
      await watch.stop();
      if (!done) {
        await shipper.stop();
        await writer.close();
      }
    },
  };
}

function methodNotAllowed(res: import('uWebSockets.js').HttpResponse): void {
  res
    .writeStatus('405 Method Not Allowed')
    .writeHeader('allow', 'POST')
    .writeHeader('content-type', 'application/json')
    .end(errorBody('method_not_allowed', 'use POST'));
}

/** Back-pressure: past SPOOL_MAX_BYTES unshipped (ClickHouse down for long), refuse rather than fill the disk. */
class SpoolLimit implements Spool {
  constructor(
    private readonly inner: Spool,
    private readonly shipper: SpoolShipper,
    private readonly max: number,
  ) {}
  append(data: string, rows: number, done: (err: Error | null) => void): void {
    if (this.shipper.unshippedBytes >= this.max)
      return done(new Error(`spool holds ${this.shipper.unshippedBytes} unshipped bytes (limit ${this.max})`));
    this.inner.append(data, rows, done);
  }
}

/** A shipper failing this long means rows are piling up unseen by ClickHouse: worth an alert. */
const SHIP_STUCK_MS = 60_000;

/**
 * Dependency checks run on a timer, so /readyz answers from memory and never waits on a store.
 * `ready` is this process's own state: not draining, and the spool has room. Redis and Postgres are
 * shared by every replica: a blip there would take all of them out of the load balancer at once,
 * leaving clients nothing to reach, so their checks are reported (and alerted on), not part of it.
 */
class Health {
  private draining = false;
  private redisOk = false;
  private pgOk = false;
  private readonly loop: Loop;
  constructor(
    private readonly redis: Redis,
    private readonly pool: Pool,
    private readonly shipper: SpoolShipper,
    private readonly maxSpool: number,
    log: Logger,
  ) {
    this.loop = new Loop(
      async () => {
        [this.redisOk, this.pgOk] = await Promise.all([redisHealthy(this.redis), pgHealthy(this.pool)]);
        this.shipper.updateGauges();
      },
      { intervalMs: 1_000, onError: (err) => log.warn({ err }, 'health check failed') },
    );
  }
  start(): void {
    this.loop.start();
  }
  /** Resolves once a check in flight has finished, so the stores it uses can be closed after. */
  stop(): Promise<void> {
    return this.loop.stop();
  }
  /** From now on /readyz answers 503: the load balancer stops sending before the thread closes. */
  markDraining(): void {
    this.draining = true;
  }
  report() {
    const spoolBytes = this.shipper.unshippedBytes;
    const spoolOk = spoolBytes < this.maxSpool;
    return {
      ready: !this.draining && spoolOk,
      checks: {
        draining: this.draining,
        redis: this.redisOk,
        postgres: this.pgOk,
        spool: { ok: spoolOk, unshipped_bytes: spoolBytes, limit_bytes: this.maxSpool },
        clickhouse_shipping:
          this.shipper.lastError === undefined ? 'ok' : `retrying: ${this.shipper.lastError.slice(0, 200)}`,
        // Not part of `ready`: the spool keeps accepting durably during a ClickHouse outage, and a
        // full spool already flips readiness. These are for alerting.
        clickhouse_shipping_stuck: this.shipper.msSinceLastSuccess > SHIP_STUCK_MS,
        clickhouse_shipping_ms_since_success: this.shipper.msSinceLastSuccess,
        quarantined_rows: this.shipper.quarantinedRows,
      },
    };
  }
}
