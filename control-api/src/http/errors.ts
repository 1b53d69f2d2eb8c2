import type { FastifyError, FastifyInstance } from 'fastify';
import { ERROR_CODES, errorBody, isMeterdError, statusOf } from '@meterd/core/errors';
import { type Logger } from '@meterd/core/log';
import type { ControlMetrics } from '../metrics.js';

/** Fastify's own error codes that are the client's fault, mapped to wire codes. */
const FASTIFY_CODES: Record<string, keyof typeof ERROR_CODES> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_BODY_TOO_LARGE: 'payload_too_large',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'invalid_json',
  FST_ERR_CTP_INVALID_JSON_BODY: 'invalid_json',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'invalid_body',
};

interface Wire {
  status: number;
  code: string;
  message: string;
  field?: string;
}

function dotted(path: string): string {
  return path.replace(/^\//, '').replace(/\//g, '.');
}

/** JSON-schema failures: the first one decides, named after the field it is about. */
function fromValidation(err: FastifyError): Wire {
  const v = err.validation![0]!;
  const at = dotted(v.instancePath);
  const params = v.params as Record<string, string>;
  if (v.keyword === 'required') {
    const field = at === '' ? params.missingProperty! : `${at}.${params.missingProperty}`;
    return { status: 400, code: 'missing_field', message: `${field} is required`, field };
  }
  if (v.keyword === 'additionalProperties') {
    const field = at === '' ? params.additionalProperty! : `${at}.${params.additionalProperty}`;
    return { status: 400, code: 'unknown_field', message: `${field} is not a field of this endpoint`, field };
  }
  if (at === '')
    return {
      status: 400,
      code: 'invalid_body',
      message: `the ${err.validationContext ?? 'body'} ${v.message ?? 'is invalid'}`,
    };
  return { status: 400, code: 'invalid_field', message: `${at} ${v.message ?? 'is invalid'}`, field: at };
}

function toWire(err: FastifyError): Wire | null {
  if (isMeterdError(err) && err.code in ERROR_CODES) {
    return {
      status: statusOf(err.code),
      code: err.code,
      message: err.message,
      ...(err.field === undefined ? {} : { field: err.field }),
    };
  }
  if (err.validation) return fromValidation(err);
  const mapped = FASTIFY_CODES[err.code];
  if (mapped !== undefined) return { status: ERROR_CODES[mapped].status, code: mapped, message: err.message };
  if (err instanceof SyntaxError && err.statusCode === 400)
    return { status: 400, code: 'invalid_json', message: 'the body is not valid JSON' };
  return null;
}

/** The one place where errors become HTTP answers: docs/api.md's error body for known codes, a bare 500 otherwise. */
export function installErrorHandling(app: FastifyInstance, log: Logger, metrics: ControlMetrics): void {
  app.setErrorHandler((err: FastifyError, req, reply) => {
    const wire = toWire(err);
    if (wire === null) {
      metrics.errors5xx.inc();
      log.error({ err, method: req.method, url: req.routeOptions.url }, 'unhandled error');
      return reply.status(500).type('application/json').send(errorBody('internal_error', 'internal error'));
    }
    if (wire.status >= 500) {
      metrics.errors5xx.inc();
      log.warn({ err, code: wire.code }, 'request failed');
    }
    // rate_limited and idempotency_key_in_use carry the seconds to wait.
    const retryAfter = (err as { retryAfter?: number }).retryAfter;
    if (retryAfter !== undefined) void reply.header('retry-after', String(retryAfter));
    return reply
      .status(wire.status)
      .type('application/json')
      .send(errorBody(wire.code, wire.message, wire.field));
  });
  app.setNotFoundHandler((req, reply) => {
    void reply
      .status(404)
      .type('application/json')
      .send(errorBody('not_found', `no route ${req.method} ${req.url.split('?')[0]}`));
  });
}
