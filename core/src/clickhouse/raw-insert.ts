import { ClickHouseQueryError } from './client.js';
import { ident } from './sql.js';

export interface RawInsertTarget {
  url: URL;
  database: string;
  user: string;
  password: string;
  timeoutMs?: number;
  /** Query settings sent with every insert (core's clusterSettings on a cluster). */
  settings?: Readonly<Record<string, unknown>>;
}

/**
 * Inserts bytes that are already in a ClickHouse input format (JSONEachRow, or RowBinary, which
 * ingest's shipper sends its events in) as they are: one POST, no decoding or re-encoding (the
 * client library's insert() would parse and re-serialise every row).
 */
export function createRawInserter(
  t: RawInsertTarget,
  table: string,
  columns?: readonly string[],
  format: 'JSONEachRow' | 'RowBinary' = 'JSONEachRow',
): (body: Buffer) => Promise<void> {
  // With a column list, the columns left out get their DEFAULT (18.16 fills them with zeros when
  // a JSONEachRow row merely omits them); RowBinary needs the list to match its column order.
  const list = columns === undefined ? '' : ` (${columns.map(ident).join(', ')})`;
  const query = `INSERT INTO ${ident(table)}${list} FORMAT ${format}`;
  const endpoint = new URL(t.url.origin + t.url.pathname);
  endpoint.searchParams.set('database', ident(t.database));
  endpoint.searchParams.set('query', query);
  for (const [k, v] of Object.entries(t.settings ?? {})) endpoint.searchParams.set(k, String(v));
  const headers = {
    'X-ClickHouse-User': t.user,
    'X-ClickHouse-Key': t.password,
    'Content-Type': format === 'RowBinary' ? 'application/octet-stream' : 'application/x-ndjson',
  };
  const href = endpoint.href;
  return async (body) => {
    let res: Response;
    try {
      res = await fetch(href, { method: 'POST', headers, body, signal: AbortSignal.timeout(t.timeoutMs ?? 30_000) });
    } catch (err) {
      throw new ClickHouseQueryError(`inserting ${body.length} bytes into ${table}`, err);
    }
    if (!res.ok) {
      const text = (await res.text()).slice(0, 2_000);
      throw new ClickHouseQueryError(`inserting into ${table} (HTTP ${res.status})`, new Error(text));
    }
    await res.arrayBuffer();
  };
}
