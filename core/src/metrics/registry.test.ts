import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { MetricsRegistry } from './registry.js';

function define(reg: MetricsRegistry) {
  return {
    c: reg.counter('x_total', 'x', { reason: 'a' }),
    g: reg.gauge('depth', 'depth'),
    h: reg.histogram('lat_seconds', 'latency', [0.1, 1]),
  };
}

test('counters, gauges and histograms render in the Prometheus text format', () => {
  const reg = new MetricsRegistry();
  const m = define(reg);
  m.c.inc();
  m.c.inc(2);
  m.g.set(5);
  m.h.observe(0.05);
  m.h.observe(0.5);
  m.h.observe(5);
  const out = reg.render();
  assert.match(out, /^# TYPE x_total counter$/m);
  assert.match(out, /^x_total\{reason="a"\} 3$/m);
  assert.match(out, /^depth 5$/m);
  assert.match(out, /^lat_seconds_bucket\{le="0.1"\} 1$/m);
  assert.match(out, /^lat_seconds_bucket\{le="1"\} 2$/m);
  assert.match(out, /^lat_seconds_bucket\{le="\+Inf"\} 3$/m);
  assert.match(out, /^lat_seconds_count 3$/m);
  assert.match(out, /^lat_seconds_sum 5.55$/m);
});

test("a scrape served by any thread sums every thread's slot", async () => {
  const main = new MetricsRegistry(2, 0);
  define(main).c.inc(1);
  const src = `
    const { workerData, parentPort } = require('node:worker_threads');
    import(workerData.mod).then(({ MetricsRegistry }) => {
      const reg = new MetricsRegistry(2, 1, workerData.buf);
      reg.counter('x_total', 'x', { reason: 'a' }).inc(41);
      parentPort.postMessage('done');
    });`;
  const w = new Worker(src, {
    eval: true,
    workerData: { buf: main.buffer, mod: new URL('./registry.js', import.meta.url).href },
  });
  await new Promise((r) => w.once('message', r));
  await w.terminate();
  assert.match(main.render(), /^x_total\{reason="a"\} 42$/m);
});
