import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { inTransaction } from '@meterd/core/store';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { call, eventually, Receiver, startTestControl } from './helpers.js';
import type { ControlServer } from '../src/server.js';
import { emitEvent } from '../src/webhooks/outbox.js';

/**
 * Issue 12, item 4: a receiver that answers one byte at a time never tripped the idle timeout, and
 * the worker waited for its whole round, so every other workspace's deliveries waited behind it.
 */
const DEADLINE_MS = 4_000;
let stores: TestStores;
let s: ControlServer;

before(async () => {
  stores = await openTestStores('ctlsechook');
  s = await startTestControl(stores, {
    WEBHOOK_TIMEOUT_MS: String(DEADLINE_MS),
    WEBHOOK_RETRY_SCALE: '100',
    WEBHOOK_MAX_ENDPOINTS: '3',
  });
});
after(async () => {
  await s.close();
  await stores.close();
});

const emit = (ws: string) =>
  inTransaction(stores.pool, (c) => emitEvent(c, ws, 'meter.quota.warning', { threshold_percent: 80 }));

/** A real receiver that sends its status line at once, then one byte of body every second, forever. */
class Trickle {
  open = 0;
  maxOpen = 0;
  requests = 0;
  bytesSent = 0;
  private server: Server | undefined;
  private readonly timers = new Set<NodeJS.Timeout>();
  url = '';

  async start(): Promise<this> {
    this.server = createServer((req, res: ServerResponse) => {
      this.requests++;
      this.maxOpen = Math.max(this.maxOpen, ++this.open);
      req.resume();
      res.writeHead(200, { 'content-type': 'text/plain' });
      const t = setInterval(() => {
        res.write('.');
        this.bytesSent++;
      }, 1_000);
      this.timers.add(t);
      res.on('close', () => {
        clearInterval(t);
        this.timers.delete(t);
        this.open--;
      });
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as { port: number }).port}/hook`;
    return this;
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.server?.closeAllConnections();
    await new Promise<void>((r) => this.server?.close(() => r()) ?? r());
  }
}

async function subscribe(url: string) {
  const w = await stores.workspace('free');
  const res = await call(s.url, 'POST', `/api/v1/workspaces/${w.workspace.id}/webhooks`, {
    token: w.token,
    body: { url },
  });
  assert.equal(res.status, 201);
  return { ...w, hookId: res.json.webhook.id as string };
}

test(
  'a trickling receiver is cut off at the total deadline, holds one connection at a time, and another workspace gets its webhooks meanwhile',
  { timeout: 60_000 },
  async () => {
    const slow = await new Trickle().start();
    const fast = await new Receiver().start();
    try {
      const a = await subscribe(slow.url);
      const b = await subscribe(fast.url);
      // The attack: three deliveries due for the trickling endpoint.
      for (let i = 0; i < 3; i++) await emit(a.workspace.id);
      await eventually(async () => slow.open > 0, 10_000, 'the trickling receiver to be connected');

      // Meanwhile another workspace's events arrive while the trickle is still connected.
      await emit(b.workspace.id);
      await fast.waitFor(1, 10_000);
      await emit(b.workspace.id);
      await fast.waitFor(2, 10_000);
      await eventually(
        async () => {
          const { rows } = await stores.pool.query(
            `SELECT count(*)::int AS n FROM webhook_deliveries WHERE workspace_id = $1 AND status = 'succeeded'`,
            [b.workspace.id],
          );
          return rows[0].n === 2;
        },
        10_000,
        "the other workspace's deliveries to be recorded",
      );
      assert.equal(slow.open, 1, 'the trickling receiver is still connected while the other endpoint was served');

      // The trickling attempt ends at the deadline as a failure, although bytes kept coming.
      const attempt = await eventually(
        async () => {
          const { rows } = await stores.pool.query(
            `SELECT t.status_code, t.latency_ms, t.error FROM webhook_attempts t JOIN webhook_deliveries d ON d.id = t.delivery_id WHERE d.workspace_id = $1`,
            [a.workspace.id],
          );
          return rows[0];
        },
        DEADLINE_MS * 3,
        'the trickling attempt to end',
      );
      assert.equal(attempt.status_code, null);
      assert.equal(attempt.error, `no complete answer within ${DEADLINE_MS} ms`);
      assert.ok(attempt.latency_ms >= DEADLINE_MS);
      assert.ok(slow.bytesSent >= 2, 'the receiver trickled more than one byte, each within an idle timeout');
      // One endpoint never has more than one attempt in flight, though three deliveries were due.
      await eventually(async () => slow.requests >= 2, DEADLINE_MS * 3, 'the next delivery to the trickling endpoint');
      assert.equal(slow.maxOpen, 1);
    } finally {
      await slow.close();
      await fast.close();
    }
  },
);

test('endpoints per workspace are capped (WEBHOOK_MAX_ENDPOINTS), also against concurrent requests; deleting one frees a place', async () => {
  const rx = await new Receiver().start();
  try {
    const w = await stores.workspace('free');
    const path = `/api/v1/workspaces/${w.workspace.id}/webhooks`;
    // The attack: many subscriptions at once, racing past a count-then-insert check.
    const results = await Promise.all(
      Array.from({ length: 8 }, () => call(s.url, 'POST', path, { token: w.token, body: { url: rx.url } })),
    );
    assert.deepEqual(results.map((r) => r.status).sort(), [201, 201, 201, 409, 409, 409, 409, 409]);
    const refused = results.find((r) => r.status === 409)!;
    assert.equal(refused.json.error.code, 'endpoint_limit_exceeded');
    assert.match(refused.json.error.message, /3 webhook endpoints/);
    const { rows } = await stores.pool.query(
      'SELECT count(*)::int AS n FROM webhook_endpoints WHERE workspace_id = $1',
      [w.workspace.id],
    );
    assert.equal(rows[0].n, 3);

    // Another workspace is not affected; deleting an endpoint frees its place.
    assert.equal((await subscribe(rx.url)).hookId.startsWith('we_'), true);
    const first = results.find((r) => r.status === 201)!.json.webhook.id as string;
    assert.equal((await call(s.url, 'DELETE', `${path}/${first}`, { token: w.token })).status, 204);
    assert.equal((await call(s.url, 'POST', path, { token: w.token, body: { url: rx.url } })).status, 201);
  } finally {
    await rx.close();
  }
});
