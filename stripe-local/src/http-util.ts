import { randomBytes } from 'node:crypto';
import type { FastifyReply } from 'fastify';
import { StripeHttpError } from './stripe-error.js';

/** Stripe's request body cap (1 MiB): larger bodies are a 413 in Stripe's error shape. */
export const MAX_BODY = 1 << 20;

/**
 * A JSON answer with the headers Stripe sends on every one (a Request-Id). The body goes as bytes:
 * Fastify would add `; charset=utf-8` to a string's Content-Type, and Stripe sends none.
 */
export function send(
  reply: FastifyReply,
  status: number,
  body: string,
  headers: Record<string, string> = {},
): FastifyReply {
  return reply
    .status(status)
    .headers({ 'Content-Type': 'application/json', 'Request-Id': `req_${randomBytes(8).toString('hex')}`, ...headers })
    .send(Buffer.from(body));
}

export function sendError(reply: FastifyReply, err: StripeHttpError): FastifyReply {
  const headers: Record<string, string> = {};
  if (err.shouldRetry !== undefined) headers['Stripe-Should-Retry'] = String(err.shouldRetry);
  return send(reply, err.status, err.body(), headers);
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
