import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { StoredEvent } from '@meterd/core/event';
import { createLogger } from '@meterd/core/log';
import { MetricsRegistry } from '@meterd/core/metrics';
import { isMain } from './harness.js';

/**
 * The shipper's own CPU per row, without the network: a spool of `rows` rows shipped in batches of
 * 50k (SHIP_BATCH_ROWS) by ingest's SpoolShipper, whose insert only encodes the rows as RowBinary,
 * as ingest's events inserter does before its POST, and whose batch record is built and dropped.
 * So the figure is read + cut + parse + encode + batch record per row, in this process's CPU time
 * (user + system), not wall time: a neighbour's load does not count. Median of `rounds`.
 *
 * `--ingest DIR` measures another build's ingest/dist/src (e.g. a checkout of main), with the same
 * spool: its inserter encoded from the lines (`spoolLinesToRowBinary`), this one from the rows the
 * shipper parsed (`parsedRowsToRowBinary`). Imported by path at run time, like rows.ts and spool.ts.
 */
interface IngestModules {
  SpoolWriter: {
    open(
      dir: string,
      opts: { segmentBytes: number; fsync: 'never' },
    ): {
      append(data: string, rows: number, done: (err: Error | null) => void): void;
      close(): Promise<void>;
    };
  };
  SpoolShipper: new (
    writer: unknown,
    insert: (lines: Buffer, rows: readonly unknown[]) => Promise<void>,
    opts: object,
  ) => { shipOnce(): Promise<number> };
  encode: (lines: Buffer, rows: readonly unknown[]) => Buffer;
  defineIngestMetrics(r: MetricsRegistry): object;
  spoolLine(r: StoredEvent): string;
}

const BATCH_ROWS = 50_000;

async function load(dir: string): Promise<IngestModules> {
  const imp = async (p: string) => (await import(new URL(`file://${join(dir, p)}`).href)) as Record<string, unknown>;
  const writer = await imp('spool/writer.js');
  const shipper = await imp('spool/shipper.js');
  const rb = await imp('spool/row-binary.js');
  const metrics = await imp('metrics.js');
  const rows = await imp('rows.js');
  const fromRows = rb.parsedRowsToRowBinary as ((rows: readonly unknown[]) => Buffer) | undefined;
  const fromLines = rb.spoolLinesToRowBinary as ((lines: Buffer) => Buffer) | undefined;
  return {
    SpoolWriter: writer.SpoolWriter as IngestModules['SpoolWriter'],
    SpoolShipper: shipper.SpoolShipper as IngestModules['SpoolShipper'],
    encode: fromRows ? (_l, rows) => fromRows(rows) : (lines) => fromLines!(lines),
    defineIngestMetrics: metrics.defineIngestMetrics as IngestModules['defineIngestMetrics'],
    spoolLine: rows.spoolLine as IngestModules['spoolLine'],
  };
}

export async function run(opts: { rows: number; rounds: number; ingest?: string }): Promise<{ nsPerRow: number[] }> {
  const m = await load(opts.ingest ?? new URL('../../../ingest/dist/src/', import.meta.url).pathname);
  const sec = Math.floor(Date.now() / 1000) * 1000;
  const lines: string[] = [];
  for (let i = 0; i < 1000; i++)
    lines.push(
      m.spoolLine({
        id: `ev_${i.toString(36).padStart(22, '0')}`,
        workspace_id: `ws_${i % 7}abcdefghijklm`,
        event_type: 'checkout.completed',
        quantity: 1,
        gmv_cents: 1000 + i,
        currency: 'USD',
        idempotency_key: `order-${i}-2f1c`,
        occurred_at_ms: sec - 2000,
        received_at_ms: sec,
      }),
    );
  const chunk = lines.join('');
  const nsPerRow: number[] = [];
  for (let round = 0; round < opts.rounds; round++) {
    const dir = mkdtempSync(join(tmpdir(), 'meterd-micro-ship-'));
    const w = m.SpoolWriter.open(dir, { segmentBytes: 1 << 30, fsync: 'never' });
    for (let n = 0; n < opts.rows; n += 1000)
      await new Promise<void>((res, rej) => w.append(chunk, 1000, (e) => (e ? rej(e) : res())));
    let encoded = 0;
    const s = new m.SpoolShipper(
      w,
      async (l, rows) => {
        encoded += m.encode(l, rows).length;
      },
      {
        batchRows: BATCH_ROWS,
        intervalMs: 1000,
        metrics: m.defineIngestMetrics(new MetricsRegistry()),
        log: createLogger('micro-ship', 'silent'),
        record: async () => {},
      },
    );
    const c0 = process.cpuUsage();
    let shipped = 0;
    while (shipped < opts.rows) shipped += await s.shipOnce();
    const c = process.cpuUsage(c0);
    nsPerRow.push(Math.round(((c.user + c.system) * 1000) / shipped));
    // A row the encoder refused would be bisected and quarantined instead: the figure would be wrong.
    if (encoded < shipped * 60) throw new Error(`only ${encoded} bytes encoded for ${shipped} rows`);
    await w.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return { nsPerRow };
}

if (isMain(import.meta.url)) {
  const at = process.argv.indexOf('--ingest');
  const ingest = at > 0 ? process.argv[at + 1] : undefined;
  const { nsPerRow } = await run({ rows: 500_000, rounds: 7, ...(ingest === undefined ? {} : { ingest }) });
  const sorted = [...nsPerRow].sort((a, b) => a - b);
  process.stdout.write(
    `shipper CPU per row (read, cut, parse, RowBinary, batch record; ${ingest ?? 'this build'}): median ${sorted[sorted.length >> 1]} ns (rounds: ${nsPerRow.join(', ')})\n`,
  );
}
