import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { lit } from '@meterd/core/clickhouse';
import { loadConfig, storeVars } from '@meterd/core/config';
import { CH_TABLES } from '@meterd/core/contracts';
import type { StoredEvent } from '@meterd/core/event';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { spoolLine } from '../rows.js';
import { rowRejectionCode } from './insert-errors.js';
import { createEventsInserter, parsedRowsToRowBinary } from './row-binary.js';
import { parseLines } from './shipper.js';

// Spool lines shipped as RowBinary read back from ClickHouse (18.16 here) exactly as the lines say.
let stores: TestStores;
before(async () => {
  stores = await openTestStores('rowbinary');
});
after(async () => {
  await stores.close();
});

const base = (i: number, o: Partial<StoredEvent>): StoredEvent => ({
  id: `ev_rb${i}`,
  workspace_id: 'ws_rowbinary',
  event_type: 'checkout.completed',
  quantity: 1,
  gmv_cents: 4299,
  currency: 'USD',
  idempotency_key: `k${i}`,
  occurred_at_ms: Date.UTC(2026, 10, 30, 12, 0, 0),
  received_at_ms: Date.UTC(2026, 10, 30, 12, 0, 1),
  ...o,
});

const EDGES: StoredEvent[] = [
  base(0, { gmv_cents: Number.MAX_SAFE_INTEGER, quantity: -Number.MAX_SAFE_INTEGER }),
  base(1, { gmv_cents: -Number.MAX_SAFE_INTEGER, quantity: Number.MAX_SAFE_INTEGER }),
  base(2, { gmv_cents: -1, quantity: 0 }),
  base(3, { gmv_cents: 2 ** 32, quantity: -(2 ** 32) - 1 }),
  base(4, { idempotency_key: '' }),
  base(5, { idempotency_key: 'ünïcödé 注文 🧾 "quoted" back\\slash\nnew line\ttab' }),
  base(6, { idempotency_key: 'x'.repeat(300) }),
  base(7, { occurred_at_ms: Date.UTC(1970, 0, 1, 0, 0, 1), received_at_ms: Date.UTC(2105, 11, 31, 23, 59, 59) }),
  base(8, { prop_keys: ['region', 'model'], prop_values: ['eu-west', 'gpt-4 ünïcödé 注文 🧾 "q" \\'] }),
  base(9, { prop_keys: ['empty'], prop_values: [''] }),
  base(10, { prop_keys: ['long'], prop_values: ['v'.repeat(256)] }),
];

test('spool lines shipped as RowBinary read back identically: huge integers, unicode, empty and long strings, DateTime bounds, properties', async () => {
  const cfg = loadConfig(storeVars);
  const insert = createEventsInserter({
    url: cfg.CLICKHOUSE_URL,
    database: stores.chDatabase,
    user: cfg.CLICKHOUSE_USER,
    password: cfg.CLICKHOUSE_PASSWORD,
  });
  const lines = EDGES.map(spoolLine);
  const body = Buffer.from(lines.join(''));
  await insert(body, parseLines(body, lines.length));
  const rs = await stores.clickhouse.query({
    query: `SELECT workspace_id, event_type, idempotency_key, event_id, toString(quantity) AS quantity, toString(gmv_cents) AS gmv_cents,
        currency, toString(occurred_at) AS occurred_at, toString(received_at) AS received_at, prop_keys, prop_values
      FROM ${CH_TABLES.events} WHERE workspace_id = ${lit('ws_rowbinary')} ORDER BY toUInt32(substring(event_id, 6))`,
    format: 'JSONEachRow',
  });
  const got = await rs.json<Record<string, string | string[]>>();
  const want = lines.map((l) => {
    const r = JSON.parse(l) as Record<string, string | number | string[]>;
    // A line without properties stores empty arrays (the columns' default).
    return {
      ...Object.fromEntries(Object.entries(r).map(([k, v]) => [k, Array.isArray(v) ? v : String(v)])),
      prop_keys: r.prop_keys ?? [],
      prop_values: r.prop_values ?? [],
    };
  });
  assert.ok(got.some((r) => r.prop_keys!.length === 2));
  assert.deepEqual(got, want);
});

test('a row that cannot be encoded is refused like a row ClickHouse cannot parse (the shipper quarantines it)', () => {
  for (const bad of [
    '{"workspace_id":"ws_x"',
    spoolLine(base(0, {})).replace('"gmv_cents":4299', '"gmv_cents":9007199254740993'),
    spoolLine(base(0, {})).replace(/"occurred_at":"[^"]*"/, '"occurred_at":"yesterday"'),
  ]) {
    assert.throws(
      () => parsedRowsToRowBinary(parseLines(Buffer.from(`${bad}\n`), 1)),
      (err: unknown) => rowRejectionCode(err) === 27,
    );
  }
});
