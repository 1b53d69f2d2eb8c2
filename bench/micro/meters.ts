import { join } from 'node:path';
import type { EventRow } from '@meterd/core/clickhouse';
import type { StoredEvent } from '@meterd/core/event';
import type { MeterDefinition } from '@meterd/core/meters';
import { BENCH_METER_SPECS, benchProperties } from '../src/stack/meters.js';
import { isMain } from './harness.js';

/**
 * The shipper's meter partials (core's meterPartials) alone: CPU per event for 0, 1, 5 and 10 of
 * the bench's meters (stack/meters.ts, in order), over one ship round of 50,000 bench events as the
 * shipper holds them: `--scenario batch --meters N` bodies (one workspace, one event type, one
 * occurred_at for the whole run, properties from benchProperties), spooled by ingest's spoolLine
 * and parsed back with JSON.parse like the shipper's parseLines. Process CPU time (user + system),
 * median of `rounds`, so a neighbour's load does not count.
 *
 * `--against DIR` also measures another build's core (DIR = its core/dist/src, e.g. a copy of main's)
 * in the same process, round by round alternately, checks that both give the same partials, and
 * prints this ÷ that. Imported by path at run time, like ship.ts does ingest. `--rounds N` (15).
 */
type PartialsFn = (
  batchId: string,
  attempt: number,
  winners: Iterable<EventRow>,
  meters: ReadonlyMap<string, readonly MeterDefinition[]>,
) => unknown[];

export const METER_COUNTS = [0, 1, 5, 10] as const;
const EVENTS = 50_000;
const WORKSPACE = 'ws_benchmetersabcdefgh';

async function partialsOf(coreSrc: string): Promise<PartialsFn> {
  const mod = (await import(new URL(`file://${join(coreSrc, 'meters/partials.js')}`).href)) as Record<string, unknown>;
  return mod.meterPartials as PartialsFn;
}

/** The bench's meters 0..n-1 on the bench workspace, as the catalog loads them. */
export function benchMeters(n: number): MeterDefinition[] {
  return BENCH_METER_SPECS.slice(0, n).map((s, i) => ({
    id: `mtr_${String(i).padStart(2, '0')}bench${s.slug.replace(/-/g, '')}`,
    workspace_id: WORKSPACE,
    name: s.slug,
    description: '',
    event_types: ['checkout.completed'],
    stripe_event_name: null,
    created_at_ms: 0,
    updated_at_ms: 0,
    backfill_state: 'done',
    ...s,
    group_by: [...s.group_by],
  }));
}

/** One ship round of bench events, as the shipper's parseLines returns them. */
export async function benchEvents(count = EVENTS): Promise<EventRow[]> {
  const url = new URL('../../../ingest/dist/src/rows.js', import.meta.url);
  let spoolLine: (r: StoredEvent) => string;
  try {
    spoolLine = ((await import(url.href)) as { spoolLine: typeof spoolLine }).spoolLine;
  } catch (err) {
    throw new Error(`cannot load ${url.pathname}: build ingest first (npx tsc -b ingest)`, { cause: err });
  }
  const sec = Math.floor(Date.now() / 1000) * 1000;
  const out: EventRow[] = [];
  for (let n = 0; n < count; n++) {
    const props = (JSON.parse(`{${benchProperties(n)}}`) as { properties: Record<string, string> }).properties;
    const line = spoolLine({
      id: `ev_${n.toString(36).padStart(22, '0')}`,
      workspace_id: WORKSPACE,
      event_type: 'checkout.completed',
      quantity: 1,
      gmv_cents: 1000 + (n % 9000),
      currency: 'USD',
      idempotency_key: `b7k2q-${n}`,
      // The bench sends one occurred_at for the whole run (workloads.ts): every latest is a tie.
      occurred_at_ms: sec - 60_000,
      // ~4,000 events a second arrive at the shipper, as in the batch scenario.
      received_at_ms: sec + Math.floor(n / 4000) * 1000,
      prop_keys: Object.keys(props),
      prop_values: Object.values(props),
    });
    out.push(JSON.parse(line) as EventRow);
  }
  return out;
}

function cpuPerEvent(fn: PartialsFn, events: readonly EventRow[], meters: Map<string, MeterDefinition[]>): number {
  const c0 = process.cpuUsage();
  const p = fn('spool:1:0', events.length, events, meters);
  const c = process.cpuUsage(c0);
  if (p.length === 0 && (meters.get(WORKSPACE)?.length ?? 0) > 0) throw new Error('no partials');
  return ((c.user + c.system) * 1000) / events.length;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

export interface MetersMicro {
  meters: number;
  /** Median ns of CPU per event, this build (and the other when `against`). */
  ns: number;
  againstNs?: number;
}

export async function run(opts: { rounds: number; against?: string }): Promise<MetersMicro[]> {
  const events = await benchEvents();
  const mine = await partialsOf(new URL('../../../core/dist/src/', import.meta.url).pathname);
  const other = opts.against === undefined ? undefined : await partialsOf(opts.against);
  const out: MetersMicro[] = [];
  for (const n of METER_COUNTS) {
    const meters = new Map([[WORKSPACE, benchMeters(n)]]);
    if (other !== undefined) {
      const a = JSON.stringify(mine('b', 1, events, meters));
      const b = JSON.stringify(other('b', 1, events, meters));
      if (a !== b) throw new Error(`${n} meters: the two builds' partials differ`);
    }
    // Warm-up rounds: the first calls run interpreted and compile.
    for (let w = 0; w < 3; w++) {
      cpuPerEvent(mine, events, meters);
      if (other !== undefined) cpuPerEvent(other, events, meters);
    }
    const a: number[] = [];
    const b: number[] = [];
    for (let r = 0; r < opts.rounds; r++) {
      // Alternate which goes first, so a slow patch of the machine does not favour one side.
      if (other !== undefined && r % 2 === 1) b.push(cpuPerEvent(other, events, meters));
      a.push(cpuPerEvent(mine, events, meters));
      if (other !== undefined && r % 2 === 0) b.push(cpuPerEvent(other, events, meters));
    }
    out.push({ meters: n, ns: median(a), ...(other === undefined ? {} : { againstNs: median(b) }) });
  }
  return out;
}

export function printMeters(rows: readonly MetersMicro[], against?: string): void {
  process.stdout.write(
    `meterPartials CPU per event (${EVENTS.toLocaleString('en-US')} bench events per call, median)\n`,
  );
  for (const r of rows) {
    let line = `  ${String(r.meters).padStart(2)} meters  ${r.ns.toFixed(0).padStart(7)} ns/event`;
    if (r.againstNs !== undefined)
      line += `   ${against}: ${r.againstNs.toFixed(0).padStart(7)} ns/event   this ÷ that ${(r.ns / r.againstNs).toFixed(3)}`;
    process.stdout.write(`${line}\n`);
  }
}

if (isMain(import.meta.url)) {
  const at = process.argv.indexOf('--against');
  const against = at > 0 ? process.argv[at + 1] : undefined;
  const ra = process.argv.indexOf('--rounds');
  const rounds = ra > 0 ? Number(process.argv[ra + 1]) : 15;
  const rows = await run({ rounds, ...(against === undefined ? {} : { against }) });
  printMeters(rows, against);
}
