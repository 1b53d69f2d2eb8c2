import { randomBytes } from 'node:crypto';
import type { ClickHouseClient } from '@clickhouse/client';
import { insertEventBatch, toClickHouseDateTime, type EventRow } from '@meterd/core/clickhouse';
import { MeterCatalog, meterPartials, recordMeterPartialsWith, type MeterDefinition } from '@meterd/core/meters';
import { openTestStores } from '@meterd/core/testing';
import { isMain } from './harness.js';
import { benchProperties, defineBenchMeters } from '../src/stack/meters.js';

/**
 * The aggregator's cycle with the bench's meters, alone: ships batches as ingest's shipper does
 * (events, the meters' partials, the batch record; realistic bench events with properties, in the
 * open hour) into a database of its own on the configured ClickHouse, runs one aggregator cycle
 * after each, and reports per cycle every ClickHouse statement the cycle ran (its wall time, and the
 * server's duration and read_rows from system.query_log, matched by query_id), the meters' share
 * (from the built-in rollups' last statement to the shard state's write: the catalog, the meters'
 * statements and the JS between them) and the whole cycle. `--aggregator DIR`: another build's
 * aggregator/dist/src (e.g. the integration branch), for before/after figures.
 *
 *   node bench/dist/micro/agg-meters.js [--meters 10] [--rounds 40] [--events 2500] [--aggregator DIR]
 */
export interface StatementTiming {
  kind: string;
  wallMs: number;
  serverMs: number;
  readRows: number;
  writtenRows: number;
}

export interface CycleTiming {
  round: number;
  cycleMs: number;
  meterMs: number;
  statements: StatementTiming[];
}

interface AggregatorLike {
  runOnce(): Promise<unknown>;
  stop(): Promise<void>;
}

interface Options {
  meters: number;
  rounds: number;
  events: number;
  aggregator?: string;
  keep?: boolean;
}

/** What a statement does, from its text (the harness's own reading, not the aggregator's). */
function kindOf(sql: string): string {
  const s = sql.replace(/\s+/g, ' ');
  const into = /^INSERT INTO (\w+)/i.exec(s)?.[1];
  const from = [...s.matchAll(/FROM (\w+)/gi)].map((m) => m[1]!).filter((t) => t !== 'system');
  const src = [...new Set(from)].filter((t) => t !== into).join('+');
  if (into !== undefined) return `insert ${into} ← ${src || 'values'}`;
  return `select ${src || '-'}`;
}

/** A client whose every statement gets a query_id of this harness and is timed. */
function tracing(ch: ClickHouseClient, log: { id: string; sql: string; t0: number; t1: number }[]): ClickHouseClient {
  let n = 0;
  const tag = randomBytes(4).toString('hex');
  return new Proxy(ch, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (prop !== 'query' && prop !== 'command' && prop !== 'insert' && prop !== 'exec') return v;
      return async (params: { query?: string; table?: string; clickhouse_settings?: object }) => {
        const id = `aggm-${tag}-${n++}`;
        const t0 = performance.now();
        try {
          return await (v as (p: unknown) => Promise<unknown>).call(target, {
            ...params,
            query_id: id,
            clickhouse_settings: { ...params.clickhouse_settings, log_queries: 1 },
          });
        } finally {
          log.push({ id, sql: params.query ?? `INSERT INTO ${params.table} VALUES`, t0, t1: performance.now() });
        }
      };
    },
  });
}

let key = 0;
function shipRound(ws: string, n: number, nowMs: number): EventRow[] {
  const rows: EventRow[] = [];
  for (let i = 0; i < n; i++) {
    const k = key++;
    const props = JSON.parse(`{${benchProperties(k)}}`) as { properties: Record<string, string> };
    const at = toClickHouseDateTime(nowMs - (k % 2_000));
    rows.push({
      workspace_id: ws,
      event_type: 'checkout.completed',
      idempotency_key: `k${k}`,
      event_id: `evt_${k}`,
      quantity: 1 + (k % 5),
      gmv_cents: 100 + ((k * 37) % 9_000),
      currency: k % 7 === 0 ? 'EUR' : 'USD',
      occurred_at: at,
      received_at: toClickHouseDateTime(nowMs),
      prop_keys: Object.keys(props.properties),
      prop_values: Object.values(props.properties),
    });
  }
  return rows;
}

export async function run(o: Options): Promise<CycleTiming[]> {
  const dir = o.aggregator ?? new URL('../../../aggregator/dist/src/', import.meta.url).pathname;
  // Loaded by path, like the other micro-benchmarks' builds: bench does not depend on services.
  const { Aggregator } = (await import(`${dir}/worker/aggregator.js`)) as {
    Aggregator: new (ch: ClickHouseClient, leases: unknown, opts: object) => AggregatorLike;
  };
  const { PgTableLeases } = (await import(`${dir}/worker/leases.js`)) as {
    PgTableLeases: new (pool: unknown, opts: { shards: number; ttlMs: number }) => unknown;
  };
  const stores = await openTestStores('aggmeters');
  try {
    const ws = `ws_aggm_${randomBytes(3).toString('hex')}`;
    await stores.pool.query(`INSERT INTO workspaces (id, slug, display_name, plan) VALUES ($1, $2, 'Bench', 'scale')`, [
      ws,
      ws.replace(/_/g, '-'),
    ]);
    const defs: MeterDefinition[] = o.meters > 0 ? await defineBenchMeters(stores.pool, ws, o.meters) : [];
    const meters = new Map<string, readonly MeterDefinition[]>([[ws, defs]]);
    const log: { id: string; sql: string; t0: number; t1: number }[] = [];
    const ch = tracing(stores.clickhouse, log);
    const agg = new Aggregator(ch, new PgTableLeases(stores.pool, { shards: 4, ttlMs: 30_000 }), {
      shards: 4,
      closeAfterSeconds: 600,
      copyHorizonSeconds: 35 * 86_400,
      windowsPerQuery: 200,
      meters: new MeterCatalog(stores.pool, { ttlMs: 2_000 }),
    });
    const out: CycleTiming[] = [];
    try {
      await agg.runOnce();
      for (let round = 1; round <= o.rounds; round++) {
        const rows = shipRound(ws, o.events, Date.now());
        await insertEventBatch(stores.clickhouse, rows, { id: `b${round}`, attempt: 0 }, (id, attempt, winners) =>
          recordMeterPartialsWith(stores.clickhouse, meterPartials(id, attempt, winners, meters)),
        );
        log.length = 0;
        const t0 = performance.now();
        await agg.runOnce();
        const t1 = performance.now();
        const statements = [...log];
        if (process.env.AGGM_SQL === '1' && round === o.rounds)
          for (const st of statements) process.stderr.write(`${st.sql}\n;;\n`);
        await stores.clickhouse.command({ query: 'SYSTEM FLUSH LOGS' });
        const ids = statements.map((s) => `'${s.id}'`).join(', ');
        const server = await (
          await stores.clickhouse.query({
            query: `SELECT query_id, query_duration_ms AS ms, read_rows AS r, written_rows AS w, memory_usage AS mem FROM system.query_log
              WHERE type = 2 AND query_id IN (${ids}) AND event_date >= yesterday()`,
            format: 'JSONEachRow',
          })
        ).json<{ query_id: string; ms: string; r: string; w: string }>();
        const byId = new Map(server.map((r) => [r.query_id, r]));
        const timed = statements.map((s) => ({
          kind: kindOf(s.sql),
          wallMs: s.t1 - s.t0,
          serverMs: Number(byId.get(s.id)?.ms ?? NaN),
          readRows: Number(byId.get(s.id)?.r ?? NaN),
          writtenRows: Number(byId.get(s.id)?.w ?? NaN),
        }));
        // The meters' share: from the end of the built-in rollups' last statement (the month roll-up)
        // to the start of the shard state's write.
        const lastRollup = statements.findLastIndex((s) => /INSERT INTO usage_(hourly|daily|monthly)/.test(s.sql));
        const stateWrite = statements.findIndex((s) => /INSERT INTO aggregator_state/.test(s.sql));
        const meterMs =
          lastRollup >= 0 && stateWrite > lastRollup ? statements[stateWrite]!.t0 - statements[lastRollup]!.t1 : 0;
        out.push({ round, cycleMs: t1 - t0, meterMs, statements: timed });
      }
    } finally {
      await agg.stop();
    }
    return out;
  } finally {
    if (o.keep === true) {
      // For reading the statements' plans by hand afterwards; drop the databases when done.
      process.stderr.write(`kept ClickHouse database ${stores.chDatabase}, Postgres ${stores.databaseUrl.pathname}\n`);
      await stores.clickhouse.close();
      await stores.pool.end();
      await stores.redis.quit();
    } else await stores.close();
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.floor(s.length / 2)]!;
};

export function printCycles(cycles: CycleTiming[]): void {
  const parts = [cycles.slice(0, Math.ceil(cycles.length / 2)), cycles.slice(Math.ceil(cycles.length / 2))];
  for (const part of parts) {
    if (part.length === 0) continue;
    process.stdout.write(
      `rounds ${part[0]!.round}–${part[part.length - 1]!.round}: cycle median ${median(part.map((c) => c.cycleMs)).toFixed(1)} ms, meters' share median ${median(part.map((c) => c.meterMs)).toFixed(1)} ms\n`,
    );
    const kinds = new Map<string, StatementTiming[]>();
    for (const c of part)
      for (const s of c.statements) {
        const l = kinds.get(s.kind) ?? [];
        l.push(s);
        kinds.set(s.kind, l);
      }
    for (const [k, l] of kinds) {
      const per = l.length / part.length;
      process.stdout.write(
        `  ${k.padEnd(60)} ${per.toFixed(1).padStart(5)}/cycle  wall ${median(l.map((s) => s.wallMs))
          .toFixed(1)
          .padStart(7)} ms  server ${String(median(l.map((s) => s.serverMs))).padStart(5)} ms  read_rows ${String(
          median(l.map((s) => s.readRows)),
        ).padStart(8)}  written ${String(median(l.map((s) => s.writtenRows))).padStart(6)}\n`,
      );
    }
  }
}

if (isMain(import.meta.url)) {
  const arg = (name: string): string | undefined => {
    const i = process.argv.indexOf(`--${name}`);
    return i < 0 ? undefined : process.argv[i + 1];
  };
  const aggregator = arg('aggregator');
  const cycles = await run({
    meters: Number(arg('meters') ?? 10),
    rounds: Number(arg('rounds') ?? 40),
    events: Number(arg('events') ?? 2_500),
    ...(aggregator === undefined ? {} : { aggregator }),
    keep: process.argv.includes('--keep'),
  });
  printCycles(cycles);
  if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify(cycles)}\n`);
}
