import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ClickHouseClient } from '@clickhouse/client';
import { toClickHouseDateTime } from '@meterd/core/clickhouse';
import { REPO_ROOT } from '@meterd/core/testing';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { openChdb, type Chdb } from '@meterd/core/testing/chdb';

/**
 * The ready queries of docs/rollups.md run as written on ClickHouse 18.16 and on the current
 * engine (chDB), every time bound in explicit UTC, and give the numbers finance expects: last
 * month's refunds counted once even when a forgotten retry stored a copy in this month.
 */
const doc = readFileSync(join(REPO_ROOT, 'docs/rollups.md'), 'utf8');
const queries = [...doc.slice(doc.indexOf('## Ready queries')).matchAll(/```sql\n([\s\S]*?)```/g)].map((m) =>
  m[1]!.trim().replace(/;$/, ''),
);

let stores: TestStores;
let engine: Chdb;
let chdb: ClickHouseClient;
before(async () => {
  stores = await openTestStores('aggdocs');
  engine = await openChdb('docs');
  chdb = engine.client;
});
after(async () => {
  await engine.close();
  await stores.close();
});

test('docs/rollups.md has ready queries, each with explicit UTC bounds', () => {
  assert.ok(queries.length >= 5);
  for (const q of queries) {
    assert.doesNotMatch(q, /toStartOf(Month|Day|Hour)\(now\(\)\)/, `a bound in the server's time zone: ${q}`);
    if (/now\(\)/.test(q)) assert.match(q, /'UTC'/);
  }
});

for (const [engine, get] of [
  ['18.16', () => stores.clickhouse],
  ['chDB', () => chdb],
] as const) {
  test(`the ready queries run on ${engine}; the refunds query counts a refund once, in the month of its first copy`, async () => {
    const ch = get();
    const now = new Date();
    const lastMonth = Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 10, 12);
    const thisMonth = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1, 0, 30);
    const ws = `ws_docs${engine.replace(/\W/g, '')}`;
    const ev = (key: string, id: string, gmv: number, currency: string, at: number) => ({
      workspace_id: ws,
      event_type: 'refund.issued',
      idempotency_key: key,
      event_id: id,
      quantity: -1,
      gmv_cents: gmv,
      currency,
      occurred_at: toClickHouseDateTime(at),
      received_at: toClickHouseDateTime(at),
    });
    await ch.insert({
      table: 'events',
      format: 'JSONEachRow',
      values: [ev('r1', 'evt_r1', -1500, 'USD', lastMonth), ev('r2', 'evt_r2', -300, 'JPY', lastMonth)],
    });
    // The retry of r1 Redis forgot, stored this month: it must not move or double the refund.
    await ch.insert({
      table: 'events',
      format: 'JSONEachRow',
      values: [ev('r1', 'evt_r1_retry', -1500, 'USD', thisMonth)],
    });
    for (const q of queries) {
      const rs = await ch.query({ query: q.replace(/'ws_…'/g, `'${ws}'`), format: 'JSONEachRow' });
      const rows = await rs.json<Record<string, string | number>>();
      if (/refunded_minor_units/.test(q)) {
        assert.deepEqual(
          rows
            .filter((r) => r.workspace_id === ws)
            .map((r) => [r.currency, String(r.refunded_minor_units), String(r.events)]),
          [
            ['JPY', '-300', '1'],
            ['USD', '-1500', '1'],
          ],
        );
      }
    }
  });
}
