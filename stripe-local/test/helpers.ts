import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Stripe from 'stripe';
import { startStripeLocal, type StripeLocal, type StripeLocalOptions } from '../src/index.js';

export const KEY = 'sk_test_local';

/** stripe-local in this process with the documented live limits for test keys unless a test asks otherwise. */
export async function startLocal(
  o: Partial<StripeLocalOptions> = {},
): Promise<{ local: StripeLocal; stripe: Stripe; port: number }> {
  const local = await startStripeLocal({
    host: '127.0.0.1',
    port: 0,
    apiKey: '',
    stateFile: '',
    rateMeterEvents: 1000,
    rateStream: 10_000,
    rateDefault: 1000,
    identifierWindowHours: 24,
    sessionTtlSeconds: 900,
    faults: {},
    rateTestMode: 0,
    recordDir: process.env.STRIPE_LOCAL_RECORD_DIR ?? '',
    ...o,
  });
  const port = Number(new URL(local.url).port);
  return { local, port, stripe: sdk(port) };
}

export function sdk(port: number, key = KEY): Stripe {
  return new Stripe(key, { host: '127.0.0.1', port, protocol: 'http', maxNetworkRetries: 0, timeout: 5_000 });
}

/** A webhook endpoint that keeps every delivery (raw body and Stripe-Signature header). */
export async function startReceiver(): Promise<{
  url: string;
  got: Array<{ body: string; signature: string }>;
  close(): Promise<void>;
}> {
  const got: Array<{ body: string; signature: string }> = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      got.push({ body: Buffer.concat(chunks).toString('utf8'), signature: String(req.headers['stripe-signature']) });
      res.writeHead(200).end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/webhooks/stripe`,
    got,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

/** Polls `check` until it returns a value (not undefined), failing after `ms`. */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | Promise<T | undefined>,
  ms = 10_000,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const nowS = (): number => Math.floor(Date.now() / 1000);
export const hourFloor = (s: number): number => Math.floor(s / 3600) * 3600;
