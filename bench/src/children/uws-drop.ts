import { createRequire } from 'node:module';
import { Worker, isMainThread, workerData } from 'node:worker_threads';

/**
 * The machine's ceiling: a bare uWebSockets.js POST endpoint that reads the whole body and answers
 * 202 with a short JSON body, doing nothing else. Same threads-on-one-port layout as ingest
 * (SO_REUSEPORT), so meterd ÷ this is the share of the HTTP layer's best that meterd keeps.
 * Env: PORT, THREADS.
 */
type UWS = typeof import('uWebSockets.js');
const uws = createRequire(import.meta.url)('uWebSockets.js') as UWS;
if (typeof (uws as { getParts?: unknown }).getParts !== 'function') {
  console.error('uws-drop: uWebSockets.js did not load its native binary; the ceiling would be meaningless');
  process.exit(1);
}
const port = Number(process.env.PORT);
const threads = Number(process.env.THREADS ?? '1');

if (isMainThread && threads > 1) {
  for (let i = 1; i < threads; i++) new Worker(new URL(import.meta.url), { workerData: { worker: true } });
}
if (isMainThread || (workerData as { worker?: boolean })?.worker) serve();

function serve(): void {
  const drop = (res: import('uWebSockets.js').HttpResponse): void => {
    let aborted = false;
    res.onAborted(() => {
      aborted = true;
    });
    res.onData((_chunk, isLast) => {
      if (isLast && !aborted) {
        res.cork(() =>
          res.writeStatus('202 Accepted').writeHeader('content-type', 'application/json').end('{"accepted":true}'),
        );
      }
    });
  };
  uws
    .App()
    .post('/api/v1/meter', drop)
    .post('/api/v1/meter/batch', drop)
    .get('/healthz', (res) => {
      res.end('{"status":"ok"}');
    })
    .listen('127.0.0.1', port, (s) => {
      if (!s) {
        console.error(`uws-drop: cannot listen on ${port}`);
        process.exit(1);
      }
    });
}

if (isMainThread) {
  process.on('SIGTERM', () => process.exit(0));
  process.on('SIGINT', () => process.exit(0));
}
