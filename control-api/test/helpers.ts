import { createServer, type IncomingMessage, type Server } from 'node:http';
import { checkFor, type TestStores } from '@meterd/core/testing';
import { createLogger } from '@meterd/core/log';
import { loadControlConfig, type ControlConfig } from '../src/config.js';
import { startControl, type ControlServer } from '../src/server.js';
import type { ProvisionDriver } from '../src/provision/driver.js';

export const OPERATOR_KEY = 'operator-test-key-0123456789';

/** Environment of a control API under test: real stores, fast retries, private receivers allowed. */
export function testEnv(stores: TestStores, extra: Record<string, string> = {}): Record<string, string> {
  return {
    ...stores.env,
    NODE_ENV: 'development',
    CONTROL_API_PORT: '0',
    LOG_LEVEL: 'silent',
    DEPLOY_API_KEY: OPERATOR_KEY,
    WEBHOOK_ALLOW_PRIVATE: 'true',
    WEBHOOK_RETRY_SCALE: '0.05',
    WEBHOOK_POLL_MS: '50',
    WEBHOOK_TIMEOUT_MS: '2000',
    REDIS_KEY_PREFIX: stores.redisPrefix,
    QUOTA_CHECK_MS: '3600000',
    // Every test signs up from 127.0.0.1 into one Redis bucket per file; the tests of the limit
    // itself set their own burst and prefix.
    SIGNUP_BURST: '1000',
    ...extra,
  };
}

export async function startTestControl(
  stores: TestStores,
  extra: Record<string, string> = {},
  driver?: ProvisionDriver,
): Promise<ControlServer & { cfg: ControlConfig }> {
  const cfg = loadControlConfig(testEnv(stores, extra));
  const s = await startControl(cfg, {
    log: createLogger('control-api-test', process.env.TEST_LOG_LEVEL ?? 'silent'),
    ...(driver ? { driver } : {}),
  });
  return Object.assign(s, { cfg });
}

export interface Reply {
  status: number;
  json: any;
  headers: Headers;
  text: string;
}

export async function call(
  base: string,
  method: string,
  path: string,
  o: { token?: string; body?: unknown; raw?: string; headers?: Record<string, string> } = {},
): Promise<Reply> {
  const headers: Record<string, string> = { ...(o.headers ?? {}) };
  if (o.token) headers.authorization = `Bearer ${o.token}`;
  let body: string | undefined;
  if (o.raw !== undefined) body = o.raw;
  else if (o.body !== undefined) body = JSON.stringify(o.body);
  if (body !== undefined && headers['content-type'] === undefined) headers['content-type'] = 'application/json';
  const res = await fetch(new URL(path, base), {
    method,
    headers,
    ...(body === undefined ? {} : { body }),
    redirect: 'manual',
  });
  const text = await res.text();
  // Every answer of an API path must be one the OpenAPI document describes (status and body).
  if (/^\/(api|webhooks)\//.test(path) && !path.startsWith('/api/v1/openapi.json')) {
    const check = await checkFor(base);
    const problems = check?.check(method, path, res.status, res.headers.get('content-type'), text) ?? [];
    if (problems.length > 0) throw new Error(`OpenAPI: ${problems.join('; ')}`);
  }
  let json: unknown = undefined;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.status, json, headers: res.headers, text };
}

export interface Received {
  headers: IncomingMessage['headers'];
  body: string;
  at: number;
}

/** A real local HTTP receiver whose answers the test scripts. */
export class Receiver {
  readonly received: Received[] = [];
  respond: (r: Received, n: number) => number | 'hang' = () => 200;
  private server: Server | undefined;
  url = '';
  private waiters: (() => void)[] = [];

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => (body += c));
      req.on('end', () => {
        const r: Received = { headers: req.headers, body, at: performance.now() };
        this.received.push(r);
        const status = this.respond(r, this.received.length);
        for (const w of this.waiters.splice(0)) w();
        if (status === 'hang') return;
        res.writeHead(status, { 'content-type': 'text/plain' }).end('ok');
      });
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as { port: number }).port}/hook`;
    return this;
  }

  async waitFor(n: number, timeoutMs = 10_000): Promise<Received[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.received.length < n) {
      if (Date.now() > deadline) throw new Error(`receiver got ${this.received.length} of ${n} requests`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 100);
      });
    }
    return this.received;
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((r) => this.server?.close(() => r()) ?? r());
  }
}

export async function eventually<T>(
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 10_000,
  what = 'condition',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v as T;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** docs/api.md's Node verification function (the receiver's side of the signature scheme). */
import crypto from 'node:crypto';
export function verifySignature(raw: string, header: string, secret: string): boolean {
  const parts = Object.fromEntries(header.split(',').map((p) => p.split('=')));
  const expected = crypto.createHmac('sha256', secret).update(`${parts.t}.${raw}`).digest('hex');
  return crypto.timingSafeEqual(Buffer.from(expected), Buffer.from(parts.v1));
}
