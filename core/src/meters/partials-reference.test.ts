import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hourOf, type EventRow } from '../clickhouse/batches.js';
import { METER_AGGREGATIONS, type MeterDefinition, type MeterValueField } from './definition.js';
import { meterPartials, type MeterPartial } from './partials.js';
import { meterCurrency, meterGroup, meterValue } from './value.js';

/**
 * meterPartials is optimised (plans per bucket and event type, Number sums while exact, tries of
 * interned group values, no key strings per row): this is the fold it must equal, written the
 * plain way, one key string and BigInts per row and meter, the latest key compared as UTF-8 bytes.
 */
function referencePartials(
  batchId: string,
  attempt: number,
  winners: readonly EventRow[],
  meters: ReadonlyMap<string, readonly MeterDefinition[]>,
): MeterPartial[] {
  const acc = new Map<
    string,
    { p: MeterPartial; sum: bigint; max: bigint; latest: bigint; key: Buffer; uniq: Set<string> }
  >();
  for (const r of winners) {
    for (const m of meters.get(r.workspace_id) ?? []) {
      if (!m.event_types.includes(r.event_type)) continue;
      const hour = hourOf(r);
      const cur = meterCurrency(m, r);
      const gv = meterGroup(m, r);
      const k = JSON.stringify([r.workspace_id, hour, m.id, cur, gv]);
      let a = acc.get(k);
      if (a === undefined) {
        const p: MeterPartial = {
          workspace_id: r.workspace_id,
          window_start: hour,
          meter_id: m.id,
          batch_id: batchId,
          currency: cur,
          group_values: gv,
          events: 0,
          values_n: 0,
          value_sum: '0',
          value_max: '0',
          latest_at: '1970-01-01 00:00:00',
          latest_key: '',
          latest_value: '0',
          uniq_values: [],
          skipped: 0,
          attempt,
        };
        acc.set(k, (a = { p, sum: 0n, max: 0n, latest: 0n, key: Buffer.alloc(0), uniq: new Set() }));
      }
      a.p.events++;
      if (m.aggregation === 'count') continue;
      const v = meterValue(m, r);
      if (!v.ok) {
        a.p.skipped++;
        continue;
      }
      a.p.values_n++;
      if (m.aggregation === 'unique_count') {
        a.uniq.add(v.text);
        continue;
      }
      const first = a.p.values_n === 1;
      a.sum += v.num;
      if (first || v.num > a.max) a.max = v.num;
      const key = Buffer.from(`${r.event_type}\n${r.idempotency_key}`, 'utf8');
      if (
        first ||
        r.occurred_at > a.p.latest_at ||
        (r.occurred_at === a.p.latest_at && Buffer.compare(key, a.key) > 0)
      ) {
        a.p.latest_at = r.occurred_at;
        a.key = key;
        a.latest = v.num;
      }
    }
  }
  return [...acc.values()].map((a) => ({
    ...a.p,
    value_sum: String(a.sum),
    value_max: String(a.max),
    latest_key: a.key.toString('utf8'),
    latest_value: String(a.latest),
    uniq_values: [...a.uniq],
  }));
}

// A fixed-seed generator (mulberry32): a failure names its batch and replays the same way.
let seed = 20;
const rand = (n: number): number => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return Math.floor((((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * n);
};
const pick = <T>(xs: readonly T[]): T => xs[rand(xs.length)]!;

const EVENT_TYPES = ['e.a', 'e.ab', 'e.b', 'x'];
const GROUP_KEYS = ['g1', 'g2', 'g3', 'v'];
const VALUE_FIELDS: MeterValueField[] = ['quantity', 'gmv_cents', 'properties.p1', 'properties.p2', 'properties.v'];
const CURRENCIES = ['USD', 'EUR', 'JPY', 'usd'];
const HOURS_AT = [
  '2026-03-01 09:59:59',
  '2026-03-01 10:00:00',
  '2026-03-01 10:00:00',
  '2026-03-01 10:00:01',
  '2026-03-01 10:59:59',
  '2026-03-01 11:00:00',
  '2026-03-02 10:30:00',
];
const NUMBERS = [
  0,
  -0,
  1,
  7,
  -3,
  1000,
  2 ** 53 - 1,
  -(2 ** 53 - 1),
  2 ** 53,
  2 ** 53 + 2,
  -(2 ** 53 + 2),
  2 ** 60,
  1e21,
  1.5,
  999_999_999_999_999,
  4_503_599_627_370_496,
];
const INTEGER_TEXTS = [
  '0',
  '-0',
  '1',
  '42',
  '-42',
  '007',
  '123456789012345',
  '-123456789012345',
  '1234567890123456',
  '9007199254740991',
  '9007199254740992',
  '9007199254740993',
  '-9007199254740993',
  '999999999999999999',
  '-999999999999999999',
  '4611686018427387904',
  '1000000000000000000',
  '',
  '-',
  '1.5',
  '+1',
  ' 1',
  '1 ',
  '１',
  '1e3',
  'abc',
  '0x10',
];
const GROUP_VALUES = ['', 'x', 'gpt-4o', 'é', '😀', '\ue000', '\uffff', 'x\u0300', '注文'];
const KEY_UNITS = ['a', 'z', '0', '-', 'é', '\u07ff', '\u0800', '\ud7ff', '\ue000', '\uffff', '😀', '𝄞', '\u{10ffff}'];

function randomMeters(ws: string, n: number): MeterDefinition[] {
  return Array.from({ length: n }, (_, i) => {
    const aggregation = pick(METER_AGGREGATIONS);
    // A non-count meter without a value field is no valid definition, but the fold must still agree.
    const value_field = aggregation === 'count' ? null : rand(20) === 0 ? null : pick(VALUE_FIELDS);
    const types = EVENT_TYPES.filter(() => rand(2) === 0);
    return {
      id: `mtr_${ws}_${i}`,
      workspace_id: ws,
      slug: `m${i}`,
      name: '',
      description: '',
      event_types: types.length === 0 ? [pick(EVENT_TYPES)] : types,
      aggregation,
      value_field,
      group_by: Array.from({ length: rand(4) }, () => pick(GROUP_KEYS)).filter((k, j, a) => a.indexOf(k) === j),
      stripe_event_name: null,
      created_at_ms: 0,
      updated_at_ms: 0,
      backfill_state: 'done',
    };
  });
}

function randomRows(n: number, workspaces: readonly string[]): EventRow[] {
  const seen = new Set<string>();
  const rows: EventRow[] = [];
  for (let i = 0; i < n; i++) {
    const r: EventRow = {
      workspace_id: pick(workspaces),
      event_type: pick(EVENT_TYPES),
      idempotency_key: Array.from({ length: 1 + rand(4) }, () => pick(KEY_UNITS)).join(''),
      event_id: `ev_${i}`,
      quantity: rand(3) === 0 ? pick(NUMBERS) : rand(100),
      gmv_cents: rand(3) === 0 ? pick(NUMBERS) : rand(100_000),
      currency: pick(CURRENCIES),
      occurred_at: pick(HOURS_AT),
      received_at: '2026-03-02 11:00:00',
    };
    // Winners hold one row per triple.
    const triple = `${r.workspace_id}\n${r.event_type}\n${r.idempotency_key}`;
    if (seen.has(triple)) continue;
    seen.add(triple);
    const keys = ['g1', 'g2', 'g3', 'p1', 'p2', 'v'].filter(() => rand(3) !== 0);
    keys.sort(() => rand(3) - 1);
    if (keys.length > 0) {
      r.prop_keys = keys;
      r.prop_values = keys.map((k) =>
        k.startsWith('g') ? pick(GROUP_VALUES) : rand(2) === 0 ? pick(INTEGER_TEXTS) : String(rand(5000) - 100),
      );
    }
    rows.push(r);
  }
  return rows;
}

test('meterPartials equals the plain fold on random batches: every aggregation, group-by, currencies, values past 2^53, unicode keys tied on occurred_at', () => {
  let partials = 0;
  for (let batch = 0; batch < 400; batch++) {
    const meters = new Map<string, MeterDefinition[]>();
    meters.set('ws_a', randomMeters('ws_a', 1 + rand(8)));
    meters.set('ws_b', randomMeters('ws_b', rand(4)));
    // A test bucket reads its live workspace's meters: the same definitions under another bucket.
    meters.set('ws_t', meters.get('ws_a')!);
    const rows = randomRows(1 + rand(400), ['ws_a', 'ws_b', 'ws_t', 'ws_none']);
    const want = referencePartials(`b${batch}`, batch, rows, meters);
    const got = meterPartials(`b${batch}`, batch, rows, meters);
    assert.deepEqual(got, want, `batch ${batch}`);
    // The same column order too: the partials go to ClickHouse as JSONEachRow.
    assert.equal(JSON.stringify(got), JSON.stringify(want), `batch ${batch}`);
    partials += got.length;
  }
  assert.ok(partials > 10_000, `only ${partials} partials compared`);
});

test('meterPartials sums past 2^53 exactly and comes back under it', () => {
  const m: MeterDefinition = {
    ...randomMeters('ws_a', 1)[0]!,
    aggregation: 'sum',
    value_field: 'properties.v',
    group_by: [],
    event_types: ['e.a'],
  };
  const vals = [
    '9007199254740991',
    '9007199254740991',
    '3',
    '-9007199254740991',
    '-9007199254740991',
    '-2',
    '999999999999999999',
  ];
  const rows = vals.map((v, i) => ({
    workspace_id: 'ws_a',
    event_type: 'e.a',
    idempotency_key: `k${i}`,
    event_id: `ev_${i}`,
    quantity: 1,
    gmv_cents: 0,
    currency: 'USD',
    occurred_at: '2026-03-01 10:00:00',
    received_at: '2026-03-01 10:00:00',
    prop_keys: ['v'],
    prop_values: [v],
  }));
  for (let n = 1; n <= rows.length; n++) {
    const got = meterPartials('b', 1, rows.slice(0, n), new Map([['ws_a', [m]]]));
    const want = vals.slice(0, n).reduce((s, v) => s + BigInt(v), 0n);
    assert.equal(got[0]!.value_sum, String(want), `first ${n}`);
  }
});
