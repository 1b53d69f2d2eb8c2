import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import {
  clickHouseFromConfig,
  EVENT_ROW_BINARY_COLUMNS,
  eventRowsToRowBinary,
  ident,
  toClickHouseDateTime,
  type EventRow,
} from '@meterd/core/clickhouse';
import { loadConfig, storeVars } from '@meterd/core/config';
import { migrateClickHouse } from '@meterd/core/migrate';
import { CH_MIGRATIONS_DIR } from '@meterd/core/testing';
import { pidsByName, readProc, selfCpuSeconds } from '../src/load/procstat.js';
import { isMain } from './harness.js';

/**
 * JSONEachRow against RowBinary for ingest's `events` inserts into the ClickHouse of CLICKHOUSE_URL
 * (18.16 here), in a database of its own. Per format and round: `--batches` inserts of `--batch`
 * rows shaped like ingest's spool rows, the formats alternating so a neighbour's load hits both.
 * ClickHouse CPU per row is read twice: from the server process (/proc, user + system; includes
 * whatever else the shared server did meanwhile, so it is the noisy one) and from the inserts' own
 * query_log entries (UserTimeMicroseconds + SystemTimeMicroseconds: those queries alone). Client
 * CPU per row is what the shipper adds before the POST: nothing for JSONEachRow (the spool's bytes
 * are sent as they are), the RowBinary encoding of the rows it already parsed for its batch record.
 * Medians over the rounds.
 */
export interface FormatFigures {
  format: 'JSONEachRow' | 'RowBinary';
  serverProcessNsPerRow: number;
  queryCpuNsPerRow: number;
  clientNsPerRow: number;
  bytesPerRow: number;
}

export async function run(opts: { batch: number; batches: number; rounds: number }): Promise<FormatFigures[]> {
  const cfg = loadConfig(storeVars, process.env);
  const db = ident(`meterd_micro_${randomBytes(4).toString('hex')}`);
  const connect = (database?: string) => clickHouseFromConfig(cfg, { database: database ?? 'default' });
  await migrateClickHouse(connect, db, CH_MIGRATIONS_DIR);
  const ch = connect(db);
  const serverPid = pidsByName('clickhouse-serv')[0];
  try {
    const rows = sampleRows(opts.batch);
    const json = Buffer.from(rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
    const tag = randomBytes(4).toString('hex');
    const samples: Record<FormatFigures['format'], FormatFigures[]> = { JSONEachRow: [], RowBinary: [] };
    for (let round = 0; round < opts.rounds; round++) {
      for (const format of ['JSONEachRow', 'RowBinary'] as const) {
        const ids: string[] = [];
        let clientSec = 0;
        let bytes = 0;
        const before = serverPid === undefined ? undefined : readProc(serverPid)?.cpuSec;
        for (let b = 0; b < opts.batches; b++) {
          let body = json;
          if (format === 'RowBinary') {
            const c0 = selfCpuSeconds();
            body = eventRowsToRowBinary(rows);
            clientSec += selfCpuSeconds() - c0;
          }
          bytes += body.length;
          const id = `micro_${tag}_${format}_${round}_${b}`;
          ids.push(id);
          await post(cfg, db, format, body, id);
        }
        const after = serverPid === undefined ? undefined : readProc(serverPid)?.cpuSec;
        const n = opts.batch * opts.batches;
        samples[format].push({
          format,
          serverProcessNsPerRow: before === undefined || after === undefined ? NaN : ((after - before) * 1e9) / n,
          queryCpuNsPerRow: ((await queryCpuMicros(ch, ids)) * 1e3) / n,
          clientNsPerRow: (clientSec * 1e9) / n,
          bytesPerRow: bytes / n,
        });
      }
    }
    return (['JSONEachRow', 'RowBinary'] as const).map((f) => ({
      format: f,
      serverProcessNsPerRow: median(samples[f].map((s) => s.serverProcessNsPerRow)),
      queryCpuNsPerRow: median(samples[f].map((s) => s.queryCpuNsPerRow)),
      clientNsPerRow: median(samples[f].map((s) => s.clientNsPerRow)),
      bytesPerRow: median(samples[f].map((s) => s.bytesPerRow)),
    }));
  } finally {
    await ch.command({ query: `DROP DATABASE IF EXISTS ${db}` });
    await ch.close();
  }
}

/** Rows like ingest's spool rows: ids and keys of production length, a second shared by many rows. */
function sampleRows(n: number): EventRow[] {
  const sec = Math.floor(Date.now() / 1000) * 1000;
  return Array.from({ length: n }, (_, i) => ({
    workspace_id: 'ws_abcdefghijklmnop',
    event_type: i % 3 === 0 ? 'checkout.completed' : 'api.call',
    idempotency_key: `order-${i}-${(i * 2654435761) % 1e9}`,
    event_id: `ev_${i.toString(36).padStart(22, '0')}`,
    quantity: 1 + (i % 5),
    gmv_cents: (i * 7919) % 100_000,
    currency: 'USD',
    occurred_at: toClickHouseDateTime(sec - (i % 20) * 1000),
    received_at: toClickHouseDateTime(sec),
  }));
}

async function post(
  cfg: ReturnType<typeof loadConfig<typeof storeVars>>,
  db: string,
  format: FormatFigures['format'],
  body: Buffer,
  queryId: string,
): Promise<void> {
  const url = new URL(cfg.CLICKHOUSE_URL.origin + cfg.CLICKHOUSE_URL.pathname);
  url.searchParams.set('database', db);
  url.searchParams.set('query_id', queryId);
  url.searchParams.set('log_queries', '1');
  url.searchParams.set('query', `INSERT INTO events (${EVENT_ROW_BINARY_COLUMNS.join(', ')}) FORMAT ${format}`);
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'X-ClickHouse-User': cfg.CLICKHOUSE_USER, 'X-ClickHouse-Key': cfg.CLICKHOUSE_PASSWORD },
    body,
  });
  if (!res.ok) throw new Error(`insert ${format} failed: HTTP ${res.status} ${(await res.text()).slice(0, 500)}`);
  await res.arrayBuffer();
}

async function queryCpuMicros(ch: ReturnType<typeof clickHouseFromConfig>, ids: readonly string[]): Promise<number> {
  // An insert's log entry can miss the first flush after its answer: flush again until all are in.
  for (let attempt = 0; ; attempt++) {
    await ch.command({ query: 'SYSTEM FLUSH LOGS' });
    const { us, c } = await readQueryCpu(ch, ids);
    if (c === ids.length) return us;
    if (attempt === 20) throw new Error(`query_log holds ${c} of ${ids.length} inserts`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function readQueryCpu(
  ch: ReturnType<typeof clickHouseFromConfig>,
  ids: readonly string[],
): Promise<{ us: number; c: number }> {
  const rs = await ch.query({
    query: `SELECT sum(arraySum(arrayMap((n, v) -> if(n IN ('UserTimeMicroseconds', 'SystemTimeMicroseconds'), v, 0), ProfileEvents.Names, ProfileEvents.Values))) AS us, count() AS c
      FROM system.query_log WHERE type = 2 AND event_date >= yesterday() AND query_id IN (${ids.map((i) => `'${i}'`).join(', ')})`,
    format: 'JSONEachRow',
  });
  const [row] = await rs.json<{ us: string; c: string }>();
  return { us: Number(row!.us), c: Number(row!.c) };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

export function printFigures(figs: readonly FormatFigures[]): void {
  process.stdout.write('format       CH process ns/row  CH query ns/row  client ns/row  bytes/row\n');
  for (const f of figs) {
    process.stdout.write(
      `${f.format.padEnd(12)} ${f.serverProcessNsPerRow.toFixed(0).padStart(17)}  ${f.queryCpuNsPerRow.toFixed(0).padStart(15)}  ${f.clientNsPerRow.toFixed(0).padStart(13)}  ${f.bytesPerRow.toFixed(1).padStart(9)}\n`,
    );
  }
  const [j, r] = figs;
  process.stdout.write(
    `RowBinary ÷ JSONEachRow, ClickHouse CPU per row: process ${(r!.serverProcessNsPerRow / j!.serverProcessNsPerRow).toFixed(2)}, queries ${(r!.queryCpuNsPerRow / j!.queryCpuNsPerRow).toFixed(2)}\n`,
  );
}

if (isMain(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      batch: { type: 'string', default: '20000' },
      batches: { type: 'string', default: '10' },
      rounds: { type: 'string', default: '5' },
    },
  });
  printFigures(
    await run({ batch: Number(values.batch), batches: Number(values.batches), rounds: Number(values.rounds) }),
  );
}
