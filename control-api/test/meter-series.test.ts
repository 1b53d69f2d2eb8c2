import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MeterUsageRow } from '@meterd/core/meters';
import { meterChart } from '../src/meters/series.js';

/** The dashboard's meter chart series: top groups by total, the rest folded into "other" where that means something. */
const H = 3_600_000;
const row = (w: number, model: string, value: string): MeterUsageRow => ({
  startMs: w * H,
  endMs: (w + 1) * H,
  group: { model },
  value,
});
const range = { from: 0, to: 3 * H, step: H, groupBy: ['model'] };

test('a series per group, the top N by total, windows without a value are 0, sums fold exactly into other', () => {
  const rows = [
    row(0, 'a', '5'),
    row(2, 'a', '5'),
    row(1, 'b', '20'),
    row(0, 'c', '9007199254740993'),
    row(0, 'd', '1'),
    row(0, 'e', '2'),
    row(7, 'a', '100'), // outside the range
  ];
  const c = meterChart(rows, { ...range, aggregation: 'sum', top: 3 });
  assert.deepEqual(c.windows, [0, H, 2 * H]);
  assert.deepEqual(
    c.series.map((s) => [s.label, s.values]),
    [
      ['model=c', ['9007199254740993', '0', '0']],
      ['model=b', ['0', '20', '0']],
      ['model=a', ['5', '0', '5']],
      ['other', ['3', '0', '0']],
    ],
  );
  assert.deepEqual(c.other, { groups: 2, folded: true });
  // 2^53 + 1 + 2 stays exact in "other".
  const big = meterChart([row(0, 'w', '99999999999999999'), row(0, 'x', '9007199254740993'), row(0, 'z', '2')], {
    ...range,
    aggregation: 'count',
    top: 1,
  });
  assert.deepEqual(big.series.at(-1)!.values, ['9007199254740995', '0', '0']);
});

test('max folds into the largest; unique_count and latest are not folded, and say how many groups were left out', () => {
  const rows = [row(0, 'a', '10'), row(0, 'b', '7'), row(0, 'c', '3')];
  assert.deepEqual(meterChart(rows, { ...range, aggregation: 'max', top: 1 }).series.at(-1)!.values, ['7', '0', '0']);
  for (const aggregation of ['unique_count', 'latest'] as const) {
    const c = meterChart(rows, { ...range, aggregation, top: 1 });
    assert.deepEqual(
      c.series.map((s) => s.label),
      ['model=a'],
    );
    assert.deepEqual(c.other, { groups: 2, folded: false });
  }
  const total = meterChart([{ startMs: 0, endMs: H, group: {}, value: '4' }], {
    ...range,
    groupBy: [],
    aggregation: 'sum',
    top: 10,
  });
  assert.deepEqual(total.series, [{ label: 'total', group: {}, values: ['4', '0', '0'] }]);
});
