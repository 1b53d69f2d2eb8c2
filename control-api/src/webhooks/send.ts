import http from 'node:http';
import https from 'node:https';
import { guardedLookup } from './ssrf.js';

export interface SendResult {
  /** HTTP status, or null when no answer came (network error, timeout, refused address). */
  status: number | null;
  latencyMs: number;
  error: string | null;
}

/** Receivers' answers are not read beyond this: a webhook response body is never used. */
const MAX_RESPONSE_BYTES = 64 << 10;

/**
 * One POST of a delivery. Redirects are not followed (a 3xx counts as a failure): following one
 * would reach a URL nobody checked. Unless private addresses are allowed, the socket connects
 * only to an address the SSRF guard approved.
 *
 * `deadlineMs` bounds the whole attempt (DNS, connect, request, headers and body): Node's
 * `timeout` option is an idle timeout, which a receiver trickling one byte at a time never trips,
 * and an attempt must end within the delivery lease or another worker would send it again.
 */
export function postWebhook(
  url: string,
  body: string,
  headers: Record<string, string>,
  deadlineMs: number,
  allowPrivate: boolean,
): Promise<SendResult> {
  const started = performance.now();
  const u = new URL(url);
  const mod = u.protocol === 'https:' ? https : http;
  return new Promise((resolve) => {
    let settled = false;
    const done = (status: number | null, error: string | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      resolve({ status, latencyMs: Math.round(performance.now() - started), error });
    };
    // The outcome is decided here, before the socket is torn down: a status line that came in
    // time does not make a receiver that never finished its answer a success.
    const deadline = setTimeout(() => {
      done(null, `no complete answer within ${deadlineMs} ms`);
      req.destroy();
    }, deadlineMs);
    const req = mod.request(
      u,
      {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          'user-agent': 'meterd-webhooks/1',
          ...headers,
        },
        agent: false,
        ...(allowPrivate ? {} : { lookup: guardedLookup }),
      },
      (res) => {
        let seen = 0;
        res.on('data', (chunk: Buffer) => {
          seen += chunk.length;
          if (seen > MAX_RESPONSE_BYTES) res.destroy();
        });
        res.on('end', () => done(res.statusCode ?? null, null));
        res.on('close', () => done(res.statusCode ?? null, null));
        res.on('error', () => done(res.statusCode ?? null, null));
      },
    );
    req.on('error', (err) => done(null, err.message));
    req.end(body);
  });
}
