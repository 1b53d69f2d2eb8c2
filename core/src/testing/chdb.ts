import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, type ClickHouseClient } from '@clickhouse/client';
import { createChdbConnection } from 'chdb/connection';
import { pinnedSettings } from '../clickhouse/client.js';
import { migrateClickHouse } from '../migrate/clickhouse.js';
import { CH_MIGRATIONS_DIR } from './paths.js';

/** Opens a client on the chDB data in `path` (a new connection each time, on the same data). */
export function chdbConnector(path: string): (database?: string) => ClickHouseClient {
  return (database) =>
    createClient({
      // chdb's connection is typed against its own copy of @clickhouse/client-common; the shapes match.
      connection: createChdbConnection({ path }) as never,
      ...(database === undefined ? {} : { database }),
      clickhouse_settings: pinnedSettings('current'),
    });
}

export interface Chdb {
  /** A client on the migrated `default` database. */
  client: ClickHouseClient;
  close(): Promise<void>;
}

/**
 * The current ClickHouse engine in-process (chDB), migrated like the test server, in a temporary
 * folder that close() removes: tests run the same SQL on it as on the 18.16 server.
 */
export async function openChdb(name: string): Promise<Chdb> {
  const dir = mkdtempSync(join(tmpdir(), `meterd-${name}-chdb-`));
  const connect = chdbConnector(dir);
  await migrateClickHouse(connect, 'default', CH_MIGRATIONS_DIR);
  const client = connect();
  return {
    client,
    async close() {
      await client.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
