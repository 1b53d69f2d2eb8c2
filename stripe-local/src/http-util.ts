import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import { StripeHttpError } from './stripe-error.js';

const MAX_BODY = 1 << 20;

export function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new StripeHttpError(413, 'invalid_request_error', 'Request body too large.'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

export function send(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body),
    'Request-Id': `req_${randomBytes(8).toString('hex')}`,
    ...headers,
  });
  res.end(body);
}

export function sendError(res: ServerResponse, err: StripeHttpError): void {
  const headers: Record<string, string> = {};
  if (err.shouldRetry !== undefined) headers['Stripe-Should-Retry'] = String(err.shouldRetry);
  send(res, err.status, err.body(), headers);
}

/** A Stripe list object with cursor pagination over `items` (already in list order). */
export function listOf<T extends { id: string }>(items: T[], url: string, q: URLSearchParams): string {
  const rawLimit = q.get('limit');
  const limit = rawLimit === null ? 10 : Number(rawLimit);
  if (!Number.isInteger(limit) || limit < 1 || limit > 100) {
    throw new StripeHttpError(
      400,
      'invalid_request_error',
      'Invalid integer: limit must be from 1 to 100.',
      'parameter_invalid_integer',
      'limit',
    );
  }
  let from = 0;
  const after = q.get('starting_after');
  if (after !== null) {
    const i = items.findIndex((x) => x.id === after);
    if (i === -1)
      throw new StripeHttpError(
        400,
        'invalid_request_error',
        `No such object: '${after}'`,
        'resource_missing',
        'starting_after',
      );
    from = i + 1;
  }
  const data = items.slice(from, from + limit);
  return JSON.stringify({ object: 'list', data, has_more: from + limit < items.length, url });
}
