import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { freePort } from '../src/children/child.js';
import { ACKED, KeyTracker, REFUSED, SENT } from '../src/load/tracker.js';
import { buildWorkload } from '../src/load/workloads.js';
import { bucketQuantile, mergeResults, parseResults, parseTick, runWrk, wrkAvailable } from '../src/load/wrk.js';
import { benchProperties } from '../src/stack/meters.js';

test('tick lines add up per second; the histogram gives bucket upper bounds', () => {
  const t = parseTick('@t 3 120 12000 2 10:100 40:20\n')!;
  assert.equal(t.thread, 3);
  assert.equal(t.requests, 120);
  assert.equal(t.events, 12_000);
  assert.equal(t.non2xx, 2);
  assert.equal(parseTick('Running 4s test @ http://127.0.0.1:1'), undefined);
  // 100 answers in bucket 10 (below 0.05 × 1.15^11 ms), 20 in bucket 40.
  assert.equal(bucketQuantile(t.buckets, 0.5), Math.round(0.05 * 1.15 ** 11 * 100) / 100);
  assert.equal(bucketQuantile(t.buckets, 0.99), Math.round(0.05 * 1.15 ** 41 * 100) / 100);
  assert.equal(bucketQuantile(new Map(), 0.99), 0);
});

test("wrk's per-thread results fold into one tracker: thread t's k-th key is t + threads × k", () => {
  const text = [
    'T 0 2 0 1 202:2,429:1',
    'K 0 3531', // keys 0, 3, 6, 9: acked, refused, acked, sent only
    'T 1 1 1 0 202:2',
    'K 1 33', // keys 1, 4
    'T 2 0 0 0 ',
    'K 2 1', // key 2: sent, never answered
    'L 900 1500 4000 9000 1100.5',
    'S 4000000 7 0 1 0 1 0',
  ].join('\n');
  const r = parseResults(text);
  assert.equal(r.requests, 7);
  assert.deepEqual(r.errors, { connect: 0, read: 1, write: 0, status: 1, timeout: 0 });
  assert.equal(r.latencyUs.p99, 4000);
  const tracker = new KeyTracker('x');
  const counters = { stored: 0, duplicate: 0, rejected: 0 };
  mergeResults(r, { tracker, counters }, 3);
  assert.deepEqual(counters, { stored: 3, duplicate: 1, rejected: 1 });
  // Acked: 0, 6 (thread 0) and 1, 4 (thread 1).
  assert.deepEqual(tracker.acked(), { count: 4, sum: 0 + 6 + 1 + 4 });
  // Sent, never answered: 2 and 9; refused (3) is not unanswered.
  assert.deepEqual(tracker.unanswered(), [2, 9]);
  assert.equal(tracker.issued, 10);
  assert.throws(() => parseResults('T 0 1 0 0 202:1\nK 0 3\n'), /no summary/);
});

/**
 * A stand-in server with scripted answers by key index, so every key's expected fate is known:
 * single: n % 5 = 0 → 429, else 202 echoing the key; batch: per event, n % 7 = 3 → 400 (refused),
 * n % 11 = 5 → 409 (in use: neither acked nor refused), else 202.
 */
function scripted(port: number): Promise<Server> {
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      const keys = [...body.matchAll(/"idempotency_key":"(t-(\d+))"/g)].map((m) => [m[1]!, Number(m[2])] as const);
      res.setHeader('content-type', 'application/json');
      if (req.url === '/api/v1/meter') {
        const [key, n] = keys[0]!;
        if (n % 5 === 0) {
          res.writeHead(429).end('{"error":{"code":"quota_exceeded"}}');
          return;
        }
        res.writeHead(202).end(`{"id":"e","idempotency_key":"${key}","duplicate":false}`);
        return;
      }
      const results = keys.map(([, n], index) =>
        n % 7 === 3
          ? `{"index":${index},"status":400,"error":{"code":"invalid_field","message":"x"}}`
          : n % 11 === 5
            ? `{"index":${index},"status":409,"error":{"code":"idempotency_key_in_use","message":"x"}}`
            : `{"index":${index},"status":202,"id":"e","duplicate":false}`,
      );
      const rejected = results.filter((r) => !r.includes('"status":202')).length;
      res
        .writeHead(202)
        .end(
          `{"accepted":${results.length - rejected},"duplicates":0,"rejected":${rejected},"results":[${results.join(',')}]}`,
        );
    });
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

function expected(scenario: 'single' | 'batch', n: number): number {
  if (scenario === 'single') return n % 5 === 0 ? SENT | REFUSED : SENT | ACKED;
  if (n % 7 === 3) return SENT | REFUSED;
  if (n % 11 === 5) return SENT;
  return SENT | ACKED;
}

for (const scenario of ['single', 'batch'] as const) {
  test(
    `wrk-load.lua ties every ${scenario} answer to its keys (acked, refused, in use), on every thread`,
    { skip: wrkAvailable() ? false : 'wrk is not installed', timeout: 60_000 },
    async () => {
      const port = await freePort();
      const server = await scripted(port);
      try {
        const work = buildWorkload(scenario, 't', [{ workspaceId: 'ws_a', token: 'sks_a' }], '2026-12-01T00:00:00Z');
        const s = await runWrk({ label: 't', url: `http://127.0.0.1:${port}`, connections: 4, durationSec: 2, work });
        assert.ok(s.requests > 20, `wrk sent requests (${s.requests})`);
        assert.equal(s.generator.tool, 'wrk');
        assert.equal(s.generator.threads, 4);
        let answered = 0;
        const wrong: string[] = [];
        for (let n = 0; n < work.tracker.issued; n++) {
          const got = work.tracker.stateOf(n);
          // 0: an index another thread had not reached; SENT: in flight at the stop (or a 409 in a batch).
          if (got === 0 || got === SENT) continue;
          answered++;
          if (got !== expected(scenario, n)) wrong.push(`${n}: ${got} ≠ ${expected(scenario, n)}`);
        }
        assert.deepEqual(wrong.slice(0, 10), []);
        assert.ok(answered > 20);
        const refused = scenario === 'single' ? s.statusCounts['429'] : undefined;
        if (scenario === 'single') assert.ok((refused ?? 0) > 0, '429s were answered');
        assert.equal(work.counters.rejected > 0, true);
      } finally {
        server.close();
      }
    },
  );
}

test(
  "with properties (--meters), wrk-load.lua sends each key's benchProperties, as the autocannon workload does",
  { skip: wrkAvailable() ? false : 'wrk is not installed', timeout: 60_000 },
  async () => {
    const port = await freePort();
    const seen = new Map<number, unknown>();
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => (body += d.toString()));
      req.on('end', () => {
        const events = (JSON.parse(body) as { events: { idempotency_key: string; properties?: unknown }[] }).events;
        for (const e of events) seen.set(Number(e.idempotency_key.slice(2)), e.properties);
        res.writeHead(202, { 'content-type': 'application/json' });
        res.end(`{"accepted":${events.length},"duplicates":0,"rejected":0}`);
      });
    });
    await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
    try {
      const work = buildWorkload('batch', 't', [{ workspaceId: 'ws_a', token: 'sks_a' }], '2026-12-01T00:00:00Z', {
        properties: true,
      });
      await runWrk({ label: 't', url: `http://127.0.0.1:${port}`, connections: 2, durationSec: 1, work });
      assert.ok(seen.size >= 100, `events were sent (${seen.size})`);
      for (const [n, props] of seen)
        assert.deepEqual(
          props,
          (JSON.parse(`{${benchProperties(n)}}`) as { properties: unknown }).properties,
          `key ${n}`,
        );
    } finally {
      server.close();
    }
  },
);
