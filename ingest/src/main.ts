import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { ConfigError, MetricsRegistry, createLogger, isMeterdError } from '@meterd/core';
import { loadIngestConfig, type IngestConfig } from './config.js';
import { loadNativeUws } from './native.js';

/**
 * Ingest entry point: INGEST_THREADS uWS threads share one port (SO_REUSEPORT, uWS's default on
 * Linux) and one SharedArrayBuffer of metrics. Threads rather than processes, so that any thread
 * answering /metrics sees every thread's counters without IPC. A thread that dies is restarted
 * with backoff; its spool is replayed by its successor. SIGTERM/SIGINT drain every thread.
 */
let cfg: IngestConfig;
try {
  cfg = loadIngestConfig();
  loadNativeUws();
} catch (err) {
  console.error(err instanceof ConfigError || isMeterdError(err) ? `ingest: ${err.message}` : err);
  process.exit(1);
}
const log = createLogger('ingest', cfg.LOG_LEVEL);
const registry = new MetricsRegistry(cfg.INGEST_THREADS, 0);
const workers = new Map<number, Worker>();
let stopping = false;
let reported = false;

// Spool folders of threads beyond INGEST_THREADS (the count was lowered): thread 0 ships them.
const adopt = existsSync(cfg.SPOOL_DIR)
  ? readdirSync(cfg.SPOOL_DIR)
      .filter((n) => /^t\d+$/.test(n) && Number(n.slice(1)) >= cfg.INGEST_THREADS)
      .map((n) => join(resolve(cfg.SPOOL_DIR), n))
  : [];

function spawn(index: number, attempt = 0): void {
  const w = new Worker(new URL('./worker.js', import.meta.url), {
    workerData: { index, threads: cfg.INGEST_THREADS, metrics: registry.buffer, adopt: index === 0 ? adopt : [] },
  });
  workers.set(index, w);
  let ready = false;
  w.on('message', (m: { type: string; port?: number }) => {
    if (m.type === 'listening') {
      ready = true;
      if (!reported && index === 0) {
        reported = true;
        log.info({ url: `http://${cfg.INGEST_HOST}:${m.port}`, threads: cfg.INGEST_THREADS }, 'ingest listening');
      }
    } else if (m.type === 'fatal') {
      process.exit(70); // EX_SOFTWARE: the supervisor restarts us; the spool is replayed at start
    } else if (m.type === 'drained') {
      // The thread closed every socket and ends by itself; 'exit' below counts it out.
      log.info({ thread: index }, 'ingest thread drained');
    }
  });
  w.on('error', (err) => log.error({ err, thread: index }, 'ingest thread crashed'));
  w.on('exit', (code) => {
    workers.delete(index);
    if (stopping) {
      if (workers.size === 0) process.exit(code === 0 ? 0 : 1);
      return;
    }
    const delay = Math.min(30_000, 500 * 2 ** (ready ? 0 : attempt));
    log.error({ thread: index, code, restart_in_ms: delay }, 'ingest thread exited; restarting');
    setTimeout(() => !stopping && spawn(index, ready ? 0 : attempt + 1), delay);
  });
}

for (let i = 0; i < cfg.INGEST_THREADS; i++) spawn(i);

function shutdown(signal: string): void {
  if (stopping) return;
  stopping = true;
  log.info({ signal }, 'draining ingest threads');
  for (const w of workers.values()) w.postMessage({ type: 'drain' });
  if (workers.size === 0) process.exit(0);
  setTimeout(() => {
    log.warn('threads did not drain within 20 s; exiting (the spool keeps every acknowledged event)');
    process.exit(0);
  }, 20_000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
