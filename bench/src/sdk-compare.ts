import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { lit } from '@meterd/core/clickhouse';
import { formatRfc3339 } from '@meterd/core/event';
import { REPO_ROOT } from '@meterd/core/testing';
import { freePort, startChild } from './children/child.js';
import { runLoad } from './load/run-load.js';
import { buildWorkload, BATCH_SIZE } from './load/workloads.js';
import { preflight } from './preflight.js';
import { openBenchStores } from './stack/stores.js';
import { waitForSpool } from './verify/spool.js';

/**
 * `npm run bench:sdk`: the batch benchmark (autocannon, 16 connections, 100 events per request)
 * and one @meterd/client process with automatic batching, one after the other against the same
 * self-started ingest, for the same duration. Prints both events/s, their ratio (target ≥ 0.8) and
 * checks that ClickHouse holds every event the client saw acknowledged. Wrap it in
 * `flock /work/wt/bench.lock` on a shared machine.
 */
const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '15' },
    threads: { type: 'string', default: '2' },
    concurrency: { type: 'string', default: '32' },
  },
});
const durationSec = Number(values.duration);

const stores = await openBenchStores();
const spoolDir = mkdtempSync(join(tmpdir(), 'meterd-bench-sdk-'));
const port = await freePort();
const ingest = await startChild(
  'ingest',
  join(REPO_ROOT, 'ingest/dist/src/main.js'),
  {
    ...stores.env,
    INGEST_HOST: '127.0.0.1',
    INGEST_PORT: String(port),
    INGEST_THREADS: values.threads,
    SPOOL_DIR: spoolDir,
    LOG_LEVEL: 'warn',
    DEDUPE_WINDOW_SECONDS: '600',
  },
  port,
);
try {
  const tenant = await stores.tenant('enterprise');
  await preflight(ingest.url, tenant);
  const occurredAt = formatRfc3339(Date.now());
  const work = buildWorkload('batch', `${stores.tag}b`, [tenant], occurredAt);
  const batch = await runLoad({
    label: 'batch (autocannon)',
    url: ingest.url,
    connections: 16,
    durationSec,
    requests: work.requests,
    counters: work.counters,
    serverPid: ingest.pid,
  });
  // The batch phase's spool ships before the client's phase starts, so neither phase pays for the other's shipping.
  await waitForSpool(ingest.url);
  const sdk = await new Promise<{ acked: number; rejected: number; sent: number; seconds: number; cpuSec: number }>(
    (resolve, reject) => {
      const child = spawn(process.execPath, [new URL('./children/sdk-load.js', import.meta.url).pathname], {
        env: {
          ...process.env,
          BASE_URL: ingest.url,
          API_KEY: tenant.token,
          WORKSPACE_ID: tenant.workspaceId,
          DURATION_MS: String(durationSec * 1000),
          OCCURRED_AT: occurredAt,
          TAG: `${stores.tag}s`,
          CONCURRENCY: values.concurrency,
        },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.once('exit', (code) =>
        code === 0 ? resolve(JSON.parse(out.trim())) : reject(new Error(`sdk-load exited with ${code}: ${out}`)),
      );
    },
  );
  const sdkRate = sdk.acked / sdk.seconds;
  const batchRate = batch.eventsPerSec ?? 0;
  // Every acknowledged event reached ClickHouse (the spool ships within seconds).
  let stored = 0;
  for (let i = 0; i < 240 && stored < sdk.acked; i++) {
    const rs = await stores.clickhouse.query({
      query: `SELECT uniqExact(idempotency_key) AS n FROM events WHERE workspace_id = ${lit(tenant.workspaceId)} AND event_type = 'bench.sdk'`,
      format: 'JSONEachRow',
    });
    stored = Number((await rs.json<{ n: string }>())[0]!.n);
    if (stored < sdk.acked) await new Promise((r) => setTimeout(r, 500));
  }
  process.stdout.write(
    [
      `ingest: ${values.threads} threads; ${durationSec} s per phase`,
      `batch benchmark (autocannon, 16 connections, ${BATCH_SIZE} events/request): ${Math.round(batchRate)} events/s, generator CPU ${batch.generatorCpuPctAvg.toFixed(0)} %`,
      `@meterd/client, one process (batches of 100, ${values.concurrency} in flight): ${Math.round(sdkRate)} events/s, client CPU ${((100 * sdk.cpuSec) / sdk.seconds).toFixed(0)} %, rejected ${sdk.rejected}`,
      `ratio client / batch benchmark: ${(sdkRate / batchRate).toFixed(2)} (target ≥ 0.80)`,
      `ClickHouse holds ${stored} of the ${sdk.acked} events the client saw acknowledged${stored >= sdk.acked ? '' : ' — LOST EVENTS'}`,
    ].join('\n') + '\n',
  );
  process.exitCode = stored >= sdk.acked ? 0 : 1;
} finally {
  await ingest.stop();
  rmSync(spoolDir, { recursive: true, force: true });
  await stores.close();
}
