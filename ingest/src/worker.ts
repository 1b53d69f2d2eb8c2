import { parentPort, workerData } from 'node:worker_threads';
import { createLogger } from '@meterd/core/log';
import { MetricsRegistry } from '@meterd/core/metrics';
import { loadIngestConfig } from './config.js';
import { startIngestThread } from './app.js';
import { RoundShipping, type RoundRequest } from './spool/ship-rounds.js';

/** One ingest thread: its own uWS app on the shared port, its own spool, Redis and Postgres clients. */
interface Data {
  index: number;
  threads: number;
  metrics: SharedArrayBuffer;
  adopt: string[];
}

const { index, threads, metrics, adopt } = workerData as Data;
const cfg = loadIngestConfig();
const log = createLogger('ingest', cfg.LOG_LEVEL).child({ thread: index });
// A thread that dies with uWS handles open aborts the whole process without a word (node asserts
// in uv_loop_close), so the thread cannot be restarted alone: log the cause, then ask the main
// thread to exit the process, for the supervisor (or Kubernetes) to restart it. The spool keeps
// every acknowledged event across that restart.
const fatal = (err: unknown) => {
  log.fatal({ err }, 'ingest thread failed; restarting the process');
  parentPort!.postMessage({ type: 'fatal' });
};
process.on('uncaughtException', fatal);
process.on('unhandledRejection', fatal);
// The main thread starts the ship rounds that carry this thread's batches (spool/ship-rounds.ts).
const rounds = new RoundShipping((m) => parentPort!.postMessage(m), cfg.SHIP_BATCH_ROWS);
const thread = await startIngestThread(cfg, {
  index,
  registry: new MetricsRegistry(threads, index, metrics),
  log,
  adopt,
  together: rounds.together,
});
parentPort!.postMessage({ type: 'listening', port: thread.port });
parentPort!.on('message', (m: { type: string }) => {
  if (m.type === 'ship-round' || m.type === 'ship-result') return rounds.receive(m as RoundRequest, thread.shipper);
  if (m.type === 'draining') return thread.markDraining();
  if (m.type !== 'drain') return;
  thread.close().then(
    () => {
      parentPort!.postMessage({ type: 'drained', unshippedBytes: thread.shipper.unshippedBytes });
      parentPort!.close(); // nothing keeps the thread alive now: it exits when its loop is empty
    },
    (err: unknown) => {
      log.error({ err }, 'draining failed');
      process.exitCode = 1;
      parentPort!.close();
    },
  );
});
