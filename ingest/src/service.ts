import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { MetricsRegistry } from '@meterd/core/metrics';
import type { Logger } from '@meterd/core/log';
import type { Service, ServiceContext, ServiceSpec } from '@meterd/core/service';
import { createPool, createRedis } from '@meterd/core/store';
import { loadIngestConfig, type IngestConfig } from './config.js';
import { loadNativeUws } from './native.js';
import { createBatchRecorder, createRawInserter, EVENT_ROW_BINARY_COLUMNS } from '@meterd/core/clickhouse';
import { BATCHES_RECORDED_CHANNEL, CH_TABLES } from '@meterd/core/contracts';
import { clickHouseTarget } from './app.js';
import { ShipRounds, type RoundReply } from './spool/ship-rounds.js';
import { checkSpoolIdentity, ingestInstance, markSpoolClosed, type SpoolIdentity } from './spool/identity.js';

/**
 * Ingest's process: INGEST_THREADS uWS threads share one port (SO_REUSEPORT, uWS's default on
 * Linux) and one SharedArrayBuffer of metrics. Threads rather than processes, so that any thread
 * answering /metrics sees every thread's counters without IPC. A thread that dies is restarted
 * with backoff; its spool is replayed by its successor. The main thread starts the ship rounds that
 * carry every thread's spool batch to ClickHouse together (spool/ship-rounds.ts). Draining flips every thread's /readyz to
 * 503, then close() drains every thread and resolves once all have ended.
 */
export const ingestService: ServiceSpec<IngestConfig> = {
  name: 'ingest',
  loadConfig(env) {
    const cfg = loadIngestConfig(env);
    loadNativeUws(); // a missing native build is a start-up refusal like a bad setting
    return cfg;
  },
  start: async (cfg, ctx) => startThreads(cfg, ctx, await checkSpool(cfg, ctx.log)),
  drainMs: 20_000,
};

/** Refuses to start on a replaced spool volume that may have lost acknowledged rows (spool/identity.ts). */
async function checkSpool(cfg: IngestConfig, log: Logger): Promise<SpoolIdentity> {
  const pool = createPool(cfg.DATABASE_URL, 1);
  try {
    const { identity, outcome } = await checkSpoolIdentity({
      pool,
      dir: resolve(cfg.SPOOL_DIR),
      instance: ingestInstance(cfg),
      register: cfg.INGEST_ACK === 'spool',
      acceptLost: cfg.SPOOL_ACCEPT_LOST_VOLUME,
    });
    if (outcome === 'accepted-lost')
      log.error(
        { instance: identity.instance, spool_id: identity.spool_id },
        'SPOOL_ACCEPT_LOST_VOLUME: starting on a new spool although the previous one may have held unshipped rows; they are not accounted for',
      );
    return identity;
  } finally {
    await pool.end();
  }
}

function startThreads(cfg: IngestConfig, { log, draining, env }: ServiceContext, identity: SpoolIdentity): Service {
  const registry = new MetricsRegistry(cfg.INGEST_THREADS, 0);
  const workers = new Map<number, Worker>();
  let stopping = false;
  let reported = false;
  let failed = false;
  /** Threads that drained, and the unshipped spool bytes they reported. */
  let drained = 0;
  let leftBytes = 0;
  let ended: () => void = () => {};
  const allEnded = new Promise<void>((r) => (ended = r));

  // Spool folders of threads beyond INGEST_THREADS (the count was lowered): thread 0 ships them.
  const adopt = existsSync(cfg.SPOOL_DIR)
    ? readdirSync(cfg.SPOOL_DIR)
        .filter((n) => /^t\d+$/.test(n) && Number(n.slice(1)) >= cfg.INGEST_THREADS)
        .map((n) => join(resolve(cfg.SPOOL_DIR), n))
    : [];

  function spawn(index: number, attempt = 0): void {
    const w = new Worker(new URL('./worker.js', import.meta.url), {
      workerData: { index, threads: cfg.INGEST_THREADS, metrics: registry.buffer, adopt: index === 0 ? adopt : [] },
      env,
    });
    workers.set(index, w);
    let ready = false;
    w.on('message', (m: { type: string; port?: number; unshippedBytes?: number }) => {
      if (m.type === 'ship-batch' || m.type === 'ship-none') {
        rounds.receive(index, m as RoundReply);
      } else if (m.type === 'listening') {
        ready = true;
        rounds.join(index, (r) => w.postMessage(r));
        if (draining.aborted) w.postMessage({ type: 'draining' });
        if (!reported && index === 0) {
          reported = true;
          log.info({ url: `http://${cfg.INGEST_HOST}:${m.port}`, threads: cfg.INGEST_THREADS }, 'ingest listening');
        }
      } else if (m.type === 'fatal') {
        process.exit(70); // EX_SOFTWARE: the supervisor restarts us; the spool is replayed at start
      } else if (m.type === 'drained') {
        // The thread closed every socket and ends by itself; 'exit' below counts it out.
        drained++;
        leftBytes += m.unshippedBytes ?? 0;
        log.info({ thread: index }, 'ingest thread drained');
      }
    });
    w.on('error', (err) => log.error({ err, thread: index }, 'ingest thread crashed'));
    w.on('exit', (code) => {
      workers.delete(index);
      rounds.leave(index);
      if (stopping) {
        if (code !== 0) failed = true;
        if (workers.size === 0) ended();
        return;
      }
      const delay = Math.min(30_000, 500 * 2 ** (ready ? 0 : attempt));
      log.error({ thread: index, code, restart_in_ms: delay }, 'ingest thread exited; restarting');
      setTimeout(() => !stopping && spawn(index, ready ? 0 : attempt + 1), delay);
    });
  }

  const target = clickHouseTarget(cfg);
  const pub = createRedis(cfg);
  pub.on('error', (err) => log.debug({ err }, 'redis connection error (batch announcements)'));
  const rounds = new ShipRounds({
    intervalMs: cfg.SHIP_INTERVAL_MS,
    insertEvents: createRawInserter(target, CH_TABLES.events, EVENT_ROW_BINARY_COLUMNS, 'RowBinary'),
    record: createBatchRecorder(target),
    onShipped: () =>
      void pub.publish(BATCHES_RECORDED_CHANNEL, '').catch((err: unknown) =>
        // Only a hint: the aggregators' poll finds the batches anyway, one poll later.
        log.debug({ err }, 'announcing recorded batches to the aggregators failed'),
      ),
    log,
  }).start();

  for (let i = 0; i < cfg.INGEST_THREADS; i++) spawn(i);
  draining.addEventListener('abort', () => workers.forEach((w) => w.postMessage({ type: 'draining' })), {
    once: true,
  });

  return {
    async close() {
      stopping = true;
      log.info('draining ingest threads');
      // The round in flight ends first; each thread then ships what is left on its own.
      await rounds.stop();
      pub.disconnect();
      for (const w of workers.values()) w.postMessage({ type: 'drain' });
      if (workers.size > 0) await allEnded;
      if (failed) throw new Error('an ingest thread failed while draining');
      // Every row this volume acknowledged is in ClickHouse: losing the volume now loses nothing.
      // (A thread waiting to be restarted never drained: its spool may still hold rows.)
      const shippedAll = drained === cfg.INGEST_THREADS && leftBytes === 0;
      if (shippedAll && adopt.every((dir) => !existsSync(dir))) {
        const pool = createPool(cfg.DATABASE_URL, 1);
        await markSpoolClosed(pool, ingestInstance(cfg), identity.spool_id).finally(() => pool.end());
      }
    },
  };
}
