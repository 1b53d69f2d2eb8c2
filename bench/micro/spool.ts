import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isMain } from './harness.js';

/**
 * The spool alone, on this machine's disk: closed-loop appenders (as ingest's connections are),
 * each appending rows and waiting for the acknowledgement, in each SPOOL_FSYNC mode and in the
 * bench's two request shapes. It is the ceiling of the durable-write stage without HTTP, Redis or
 * ClickHouse: with `always`, rows/s ≈ rows in flight ÷ fdatasync latency, and the ratio of
 * `always` to `interval` is what syncing before each acknowledgement costs on this disk.
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
  /** Closed-loop appenders, and rows each append carries (ingest's connections and events per request). */
  clients: number;
  rows: number;
  rowsPerSec: number;
  p50Ms: number;
  p99Ms: number;
}

/** The bench's two shapes: `single` (100 connections, 1 event each) and `batch` (16 connections × 100). */
const SHAPES = [
  { clients: 100, rows: 1 },
  { clients: 16, rows: 100 },
] as const;
const LINE =
  '{"id":"ev_0000000000000000000001","workspace_id":"ws_abcdefghijklmnop","event_type":"checkout.completed","quantity":1,"gmv_cents":1234,"currency":"USD","idempotency_key":"order-1-2f1c","occurred_at":"2026-11-30 20:00:00.000","received_at":"2026-11-30 20:00:00.000"}\n';

export async function run(opts: { ms?: number; writer?: string } = {}): Promise<SpoolResult[]> {
  const url = opts.writer ?? new URL('../../../ingest/dist/src/spool/writer.js', import.meta.url).href;
  let m: WriterModule;
  try {
    m = (await import(url)) as WriterModule;
  } catch (err) {
    throw new Error(`cannot load ${url}: build ingest first (npx tsc -b ingest)`, { cause: err });
  }
  const out: SpoolResult[] = [];
  for (const shape of SHAPES)
    for (const mode of ['always', 'interval', 'never'] as const)
      out.push(await one(m, mode, shape.clients, shape.rows, opts.ms ?? 3_000));
  return out;
}

async function one(m: WriterModule, mode: Mode, clients: number, rowsPer: number, ms: number): Promise<SpoolResult> {
  const dir = mkdtempSync(join(tmpdir(), 'meterd-micro-spool-'));
  const w = m.SpoolWriter.open(dir, { segmentBytes: 64 << 20, fsync: mode, fsyncIntervalMs: 100 });
  const payload = LINE.repeat(rowsPer);
  const latencies: number[] = [];
  let rows = 0;
  const warmEnd = performance.now() + 300;
  const end = warmEnd + ms;
  const client = async (): Promise<void> => {
    for (;;) {
      const t = performance.now();
      if (t >= end) return;
      await new Promise<void>((res, rej) => w.append(payload, rowsPer, (e) => (e ? rej(e) : res())));
      if (t >= warmEnd) {
        rows += rowsPer;
        latencies.push(performance.now() - t);
      }
    }
  };
  await Promise.all(Array.from({ length: clients }, client));
  await w.close();
  rmSync(dir, { recursive: true, force: true });
  latencies.sort((a, b) => a - b);
  const q = (p: number): number => Math.round((latencies[Math.floor(p * (latencies.length - 1))] ?? NaN) * 100) / 100;
  return { mode, clients, rows: rowsPer, rowsPerSec: Math.round(rows / (ms / 1000)), p50Ms: q(0.5), p99Ms: q(0.99) };
}

export function printSpool(results: SpoolResult[]): void {
  process.stdout.write(
    '\nspool alone (closed-loop appenders)\n| appenders × rows | SPOOL_FSYNC | rows/s | ack p50 ms | ack p99 ms |\n|---|---|---:|---:|---:|\n',
  );
  for (const r of results)
    process.stdout.write(
      `| ${r.clients} × ${r.rows} | ${r.mode} | ${r.rowsPerSec.toLocaleString('en-US')} | ${r.p50Ms} | ${r.p99Ms} |\n`,
    );
}

if (isMain(import.meta.url)) {
  const at = process.argv.indexOf('--writer');
  const writer = at > 0 ? process.argv[at + 1] : undefined;
  printSpool(await run({ writer: writer === undefined ? undefined : new URL(`file://${writer}`).href }));
}
