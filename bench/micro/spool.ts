import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isMain } from './harness.js';

/**
 * The spool alone, on this machine's disk: `clients` closed-loop appenders (as ingest's
 * connections are), each appending a batch of rows and waiting for its acknowledgement, in each
 * SPOOL_FSYNC mode. It is the ceiling of the durable-write stage measured without HTTP, Redis or
 * ClickHouse, and it justifies the pipelined group commit and `interval`: with `always`, rows/s ≈
 * rows in flight ÷ (fdatasync latency), so the ratio of `always` to `interval` is what syncing
 * before each acknowledgement costs here.
 *
 * `--writer PATH` measures another build's writer.js (e.g. a checkout of main) with the same load.
 * Imported by path at run time, like rows.ts: the bench measures ingest's own compiled code.
 */
type Mode = 'always' | 'interval' | 'never';
interface WriterModule {
  SpoolWriter: {
    open(
      dir: string,
      opts: { segmentBytes: number; fsync: Mode; fsyncIntervalMs?: number },
    ): {
      append(data: string, rows: number, done: (err: Error | null) => void): void;
      close(): Promise<void>;
    };
  };
}

export interface SpoolResult {
  mode: Mode;
  rowsPerSec: number;
  p50Ms: number;
  p99Ms: number;
}

const ROWS_PER_APPEND = 100;
const LINE =
  '{"id":"ev_0000000000000000000001","workspace_id":"ws_abcdefghijklmnop","event_type":"checkout.completed","quantity":1,"gmv_cents":1234,"currency":"USD","idempotency_key":"order-1-2f1c","occurred_at":"2026-11-30 20:00:00.000","received_at":"2026-11-30 20:00:00.000"}\n';
const PAYLOAD = LINE.repeat(ROWS_PER_APPEND);

export async function run(opts: { clients?: number; ms?: number; writer?: string } = {}): Promise<SpoolResult[]> {
  const url = opts.writer ?? new URL('../../../ingest/dist/src/spool/writer.js', import.meta.url).href;
  let m: WriterModule;
  try {
    m = (await import(url)) as WriterModule;
  } catch (err) {
    throw new Error(`cannot load ${url}: build ingest first (npx tsc -b ingest)`, { cause: err });
  }
  const out: SpoolResult[] = [];
  for (const mode of ['always', 'interval', 'never'] as const)
    out.push(await one(m, mode, opts.clients ?? 16, opts.ms ?? 3_000));
  return out;
}

async function one(m: WriterModule, mode: Mode, clients: number, ms: number): Promise<SpoolResult> {
  const dir = mkdtempSync(join(tmpdir(), 'meterd-micro-spool-'));
  const w = m.SpoolWriter.open(dir, {
    segmentBytes: 64 << 20,
    fsync: mode,
    fsyncIntervalMs: 100,
  });
  const latencies: number[] = [];
  let rows = 0;
  let measuring = false;
  const warmEnd = performance.now() + 300;
  const end = warmEnd + ms;
  const client = async (): Promise<void> => {
    for (;;) {
      const t = performance.now();
      if (t >= end) return;
      if (!measuring && t >= warmEnd) measuring = true;
      await new Promise<void>((res, rej) => w.append(PAYLOAD, ROWS_PER_APPEND, (e) => (e ? rej(e) : res())));
      if (measuring) {
        rows += ROWS_PER_APPEND;
        latencies.push(performance.now() - t);
      }
    }
  };
  await Promise.all(Array.from({ length: clients }, client));
  await w.close();
  rmSync(dir, { recursive: true, force: true });
  latencies.sort((a, b) => a - b);
  const q = (p: number): number => Math.round((latencies[Math.floor(p * (latencies.length - 1))] ?? NaN) * 100) / 100;
  return { mode, rowsPerSec: Math.round(rows / (ms / 1000)), p50Ms: q(0.5), p99Ms: q(0.99) };
}

export function printSpool(results: SpoolResult[]): void {
  process.stdout.write(
    `\nspool alone (${ROWS_PER_APPEND} rows per append, closed loop)\n| SPOOL_FSYNC | rows/s | ack p50 ms | ack p99 ms |\n|---|---:|---:|---:|\n`,
  );
  for (const r of results)
    process.stdout.write(`| ${r.mode} | ${r.rowsPerSec.toLocaleString('en-US')} | ${r.p50Ms} | ${r.p99Ms} |\n`);
}

if (isMain(import.meta.url)) {
  const at = process.argv.indexOf('--writer');
  const writer = at > 0 ? process.argv[at + 1] : undefined;
  printSpool(await run({ writer: writer === undefined ? undefined : new URL(`file://${writer}`).href }));
}
