import { type StoredEvent } from '@meterd/core/event';
import { isMain, measure, print, type MicroResult } from './harness.js';

/**
 * ingest's spool line building (rows.ts: spoolLine, compactRow, rowJson), measured as compiled.
 * Imported by path at run time, on purpose and only here: the bench measures ingest's own code
 * rather than a copy of it, and a missing build is reported instead of breaking bench's compile.
 *
 * Two inputs for spoolLine: occurred_at in the same second as received_at, and occurred_at in an
 * earlier second (what a client stamping events before sending produces). rows.ts caches the
 * DateTime text of one second; the two cases show what that single slot costs when the two times
 * of a row fall in different seconds.
 */
interface RowsModule {
  spoolLine(r: StoredEvent): string;
  compactRow(r: StoredEvent): string;
  rowJson(r: StoredEvent, duplicate: boolean): string;
}

export async function run(): Promise<MicroResult[]> {
  const url = new URL('../../../ingest/dist/src/rows.js', import.meta.url);
  let m: RowsModule;
  try {
    m = (await import(url.href)) as RowsModule;
  } catch (err) {
    throw new Error(`cannot load ${url.pathname}: build ingest first (npx tsc -b ingest)`, { cause: err });
  }
  // Stay inside one wall-clock second per run, as a real thread does between second boundaries.
  const now = Date.now();
  const sec = Math.floor(now / 1000) * 1000;
  const row = (i: number, occurred: number): StoredEvent => ({
    id: `ev_${i.toString(36).padStart(22, '0')}`,
    workspace_id: 'ws_abcdefghijklmnop',
    event_type: 'checkout.completed',
    quantity: 1,
    gmv_cents: 1000 + i,
    currency: 'USD',
    idempotency_key: `order-${i}-2f1c`,
    occurred_at_ms: occurred,
    received_at_ms: sec + 500,
  });
  const same = Array.from({ length: 1024 }, (_, i) => row(i, sec));
  const earlier = Array.from({ length: 1024 }, (_, i) => row(i, sec - 2_000));
  return [
    measure('spoolLine (occurred_at in the same second)', (i) => m.spoolLine(same[i & 1023]!)),
    measure('spoolLine (occurred_at 2 s earlier)', (i) => m.spoolLine(earlier[i & 1023]!)),
    measure('compactRow', (i) => m.compactRow(same[i & 1023]!)),
    measure('rowJson (202 body)', (i) => m.rowJson(same[i & 1023]!, false)),
  ];
}

if (isMain(import.meta.url)) print(await run());
