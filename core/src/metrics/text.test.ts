import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MetricsRegistry } from './registry.js';
import { parsePrometheus, sumOf } from './text.js';

test("parsePrometheus reads back what the registry renders, histogram buckets' le labels included", () => {
  const reg = new MetricsRegistry();
  reg.counter('x_total', 'x', { reason: 'a' }).inc(3);
  reg.counter('x_total', 'x', { reason: 'b' }).inc(4);
  const h = reg.histogram('lat_seconds', 'latency', [0.1]);
  h.observe(0.05);
  h.observe(5);
  const samples = parsePrometheus(reg.render());
  assert.deepEqual(
    samples.filter((s) => s.name === 'x_total'),
    [
      { name: 'x_total', labels: { reason: 'a' }, value: 3 },
      { name: 'x_total', labels: { reason: 'b' }, value: 4 },
    ],
  );
  assert.equal(sumOf(samples, 'x_total'), 7);
  assert.deepEqual(
    samples.filter((s) => s.name === 'lat_seconds_bucket').map((s) => [s.labels.le, s.value]),
    [
      ['0.1', 1],
      ['+Inf', 2],
    ],
  );
  assert.equal(sumOf(samples, 'lat_seconds_count'), 2);
});

test('parsePrometheus skips comments and malformed lines, unescapes label values and reads +Inf', () => {
  const text = [
    '# HELP up whether it is up',
    'not a sample',
    'up 1',
    'up{job="a \\"quoted\\" \\\\ name"} +Inf',
    'broken{le="1"} notanumber',
    '',
  ].join('\n');
  assert.deepEqual(parsePrometheus(text), [
    { name: 'up', labels: {}, value: 1 },
    { name: 'up', labels: { job: 'a "quoted" \\ name' }, value: Infinity },
  ]);
});
