import type { FastifyInstance, RouteOptions } from 'fastify';
import { ERROR_CODES, type ErrorCode } from '@meterd/core/errors';

declare module 'fastify' {
  interface FastifySchema {
    tags?: readonly string[];
    summary?: string;
    /** Left out of the OpenAPI document (health and metrics). */
    hide?: boolean;
    /** Error codes particular to the route (those of authentication and validation are added from its schema). */
    errors?: readonly ErrorCode[];
  }
}

interface Seen {
  method: string;
  url: string;
  schema: Record<string, unknown> | undefined;
}

/**
 * /api/v1/openapi.json, generated from the route schemas the server actually validates with, so
 * the document cannot drift from the behaviour. Call `collect` before any route is registered.
 */
export function openApi(app: FastifyInstance): { collect(): void; register(): void } {
  const routes: Seen[] = [];
  return {
    collect() {
      app.addHook('onRoute', (r: RouteOptions) => {
        const methods = Array.isArray(r.method) ? r.method : [r.method];
        const schema = r.schema as Record<string, unknown> | undefined;
        if (schema?.hide === true || r.url === '/api/v1/openapi.json') return;
        for (const m of methods) if (m !== 'HEAD') routes.push({ method: m.toLowerCase(), url: r.url, schema });
      });
    },
    register() {
      let doc: unknown;
      app.get('/api/v1/openapi.json', { schema: { hide: true } }, async () => (doc ??= build(routes)));
    },
  };
}

function build(routes: Seen[]) {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const path = r.url.replace(/:([A-Za-z_]+)/g, '{$1}');
    const s = r.schema ?? {};
    const params = [
      ...Object.keys((s.params as { properties?: object } | undefined)?.properties ?? {}).map((name) => ({
        name,
        in: 'path',
        required: true,
        schema: { type: 'string' },
      })),
      ...Object.entries((s.querystring as { properties?: Record<string, object> } | undefined)?.properties ?? {}).map(
        ([name, schema]) => ({ name, in: 'query', schema }),
      ),
    ];
    (paths[path] ??= {})[r.method] = {
      ...(s.summary ? { summary: s.summary } : {}),
      ...(s.tags ? { tags: s.tags } : {}),
      ...(params.length ? { parameters: params } : {}),
      ...(s.body ? { requestBody: { required: true, content: { 'application/json': { schema: s.body } } } } : {}),
      ...(r.url.startsWith('/api/v1/signup') ||
      r.url === '/webhooks/stripe' ||
      r.url.includes('/shopify/callback') ||
      r.url === '/api/v1/catalog'
        ? {}
        : { security: [{ bearer: [] }] }),
      responses: {
        default: {
          description: 'Error',
          content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
        },
      },
    };
  }
  return {
    openapi: '3.0.3',
    info: { title: 'meterd control API', version: '1' },
    paths,
    components: {
      securitySchemes: {
        bearer: {
          type: 'http',
          scheme: 'bearer',
          description: 'A workspace key (sks_…) or the operator DEPLOY_API_KEY.',
        },
      },
      schemas: {
        Error: {
          type: 'object',
          required: ['error'],
          properties: {
            error: {
              type: 'object',
              required: ['code', 'message'],
              properties: {
                code: { type: 'string', enum: Object.keys(ERROR_CODES) },
                message: { type: 'string' },
                field: { type: 'string' },
              },
            },
          },
        },
      },
    },
  };
}
