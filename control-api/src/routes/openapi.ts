import type { FastifyInstance, RouteOptions } from 'fastify';
import { ERROR_CODES, type ErrorCode } from '@meterd/core/errors';
import { EXTERNAL_ROUTES } from '../openapi/external.js';
import { environmentQueryProp } from '../http/schemas.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** Every route registered (hidden ones flagged): the OpenAPI coverage test compares it with the document. */
    routeTable: { method: string; url: string; hidden: boolean }[];
  }
  interface FastifySchema {
    tags?: readonly string[];
    summary?: string;
    /** Left out of the OpenAPI document (health, metrics, the dashboard). */
    hide?: boolean;
    /** Error codes particular to the route (those of authentication, validation and idempotency are added from its schema). */
    errors?: readonly ErrorCode[];
    /** The success answer, for the document only (Fastify's own `response` would also filter what is sent). */
    ok?: { status: number; schema: unknown };
    /** Public: no bearer key (signup, the catalog, callbacks verified by their own signature). */
    public?: boolean;
  }
}

interface Seen {
  method: string;
  url: string;
  schema: Record<string, unknown> | undefined;
}

/**
 * /api/v1/openapi.json, generated from the route schemas the server actually validates with, so
 * the document cannot drift from the behaviour, plus the routes of the same base URL that ingest
 * and the aggregator serve (openapi/external.ts). Call `collect` before any route is registered.
 */
export function openApi(app: FastifyInstance): { collect(): void; register(): void } {
  const routes: Seen[] = [];
  const table: FastifyInstance['routeTable'] = [];
  app.decorate('routeTable', table);
  return {
    collect() {
      app.addHook('onRoute', (r: RouteOptions) => {
        const methods = Array.isArray(r.method) ? r.method : [r.method];
        const schema = r.schema as Record<string, unknown> | undefined;
        const hidden = schema?.hide === true;
        for (const m of methods) if (m !== 'HEAD') table.push({ method: m.toLowerCase(), url: r.url, hidden });
        if (hidden || r.url === '/api/v1/openapi.json') return;
        for (const m of methods) if (m !== 'HEAD') routes.push({ method: m.toLowerCase(), url: r.url, schema });
      });
    },
    register() {
      let doc: unknown;
      app.get('/api/v1/openapi.json', { schema: { hide: true } }, async () => (doc ??= buildOpenApi(routes)));
    },
  };
}

const AUTH_ERRORS: readonly ErrorCode[] = [
  'missing_api_key',
  'invalid_api_key',
  'insufficient_scope',
  'service_unavailable',
];
const WORKSPACE_ERRORS: readonly ErrorCode[] = ['workspace_mismatch', 'workspace_not_found'];
const INPUT_ERRORS: readonly ErrorCode[] = ['invalid_body', 'missing_field', 'invalid_field', 'unknown_field'];
const BODY_ERRORS: readonly ErrorCode[] = ['invalid_json', 'unsupported_media_type', 'payload_too_large'];
const IDEMPOTENCY_ERRORS: readonly ErrorCode[] = ['invalid_field', 'idempotency_key_reused', 'idempotency_key_in_use'];

const idempotencyHeader = {
  name: 'Idempotency-Key',
  in: 'header',
  required: false,
  description:
    'Makes the create safe to retry: the same key with the same body within 24 h answers the first result (header `Idempotent-Replayed: true`); with another body 409 idempotency_key_reused; while the first still runs 409 idempotency_key_in_use with Retry-After. Keys are scoped to the caller.',
  schema: { type: 'string', minLength: 1, maxLength: 255 },
};

const environmentParam = {
  name: 'environment',
  in: 'query',
  required: false,
  description: environmentQueryProp.environment.description,
  schema: { type: 'string', enum: environmentQueryProp.environment.enum },
};

/** The error answers of a route, one per status, each naming the codes it can carry. */
function errorResponses(codes: Iterable<ErrorCode>): Record<string, unknown> {
  const byStatus = new Map<number, Set<ErrorCode>>();
  for (const c of codes) {
    const status = ERROR_CODES[c].status;
    (byStatus.get(status) ?? byStatus.set(status, new Set()).get(status)!).add(c);
  }
  const out: Record<string, unknown> = {};
  for (const [status, set] of [...byStatus].sort((a, b) => a[0] - b[0])) {
    const list = [...set].sort();
    out[String(status)] = {
      description: list.join(', '),
      content: { 'application/json': { schema: errorSchema(list) } },
    };
  }
  return out;
}

function errorSchema(codes: readonly string[]) {
  return {
    type: 'object',
    required: ['error'],
    additionalProperties: false,
    properties: {
      error: {
        type: 'object',
        required: ['code', 'message'],
        additionalProperties: false,
        properties: { code: { type: 'string', enum: codes }, message: { type: 'string' }, field: { type: 'string' } },
      },
    },
  };
}

function controlOperation(r: Seen) {
  const s = r.schema ?? {};
  const isPublic = s.public === true;
  const idempotent = s.idempotent === true;
  const codes = new Set<ErrorCode>(['internal_error', ...((s.errors as ErrorCode[] | undefined) ?? [])]);
  if (!isPublic) AUTH_ERRORS.forEach((c) => codes.add(c));
  // Every workspace route checks the key's workspace (http/auth.ts's workspaceAccess).
  if (!isPublic && r.url.includes('/workspaces/:id')) WORKSPACE_ERRORS.forEach((c) => codes.add(c));
  if (s.body || s.querystring || s.params) INPUT_ERRORS.forEach((c) => codes.add(c));
  if (s.body) BODY_ERRORS.forEach((c) => codes.add(c));
  if (idempotent) IDEMPOTENCY_ERRORS.forEach((c) => codes.add(c));
  const queryProps = (s.querystring as { properties?: Record<string, object> } | undefined)?.properties ?? {};
  const params = [
    ...Object.keys((s.params as { properties?: object } | undefined)?.properties ?? {}).map((name) => ({
      name,
      in: 'path',
      required: true,
      schema: { type: 'string' },
    })),
    ...Object.entries(queryProps).map(([name, schema]) => ({ name, in: 'query', schema })),
    // Every workspace route takes it (http/auth.ts); those with a querystring schema list it there already.
    ...(!isPublic && r.url.includes('/workspaces/:id') && !('environment' in queryProps) ? [environmentParam] : []),
    ...(idempotent ? [idempotencyHeader] : []),
  ];
  const ok = s.ok as { status: number; schema: unknown } | undefined;
  return {
    ...(s.summary ? { summary: s.summary } : {}),
    ...(s.tags ? { tags: s.tags } : {}),
    ...(params.length ? { parameters: params } : {}),
    ...(s.body ? { requestBody: { required: true, content: { 'application/json': { schema: s.body } } } } : {}),
    ...(isPublic ? {} : { security: [{ bearer: [] }] }),
    responses: {
      ...(ok === undefined
        ? { '2XX': { description: 'Success' }, '3XX': { description: 'Redirect' } }
        : { [String(ok.status)]: { description: 'Success', content: { 'application/json': { schema: ok.schema } } } }),
      ...errorResponses(codes),
    },
  };
}

export function buildOpenApi(routes: readonly Seen[]) {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) (paths[r.url.replace(/:([A-Za-z_]+)/g, '{$1}')] ??= {})[r.method] = controlOperation(r);
  for (const e of EXTERNAL_ROUTES) {
    (paths[e.path] ??= {})[e.method] = {
      summary: e.summary,
      tags: e.tags,
      'x-served-by': e.service,
      ...(e.parameters ? { parameters: e.parameters } : {}),
      ...(e.requestBody ? { requestBody: e.requestBody } : {}),
      security: [{ bearer: [] }],
      responses: {
        [String(e.success.status)]: {
          description: e.success.description,
          ...(e.success.headers ? { headers: e.success.headers } : {}),
          content: { 'application/json': { schema: e.success.schema } },
        },
        ...errorResponses(['internal_error', ...e.errors]),
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'meterd API',
      version: '1',
      description:
        'Every route of the public base URL: the control API, ingest (/api/v1/meter, /api/v1/meter/batch) and the usage API (docs/api.md).',
    },
    paths,
    components: {
      securitySchemes: {
        bearer: {
          type: 'http',
          scheme: 'bearer',
          description: 'A workspace key (sks_…) or the operator DEPLOY_API_KEY.',
        },
      },
      schemas: { Error: errorSchema(Object.keys(ERROR_CODES)) },
    },
  };
}
