import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ERROR_CODES } from '@meterd/core/errors';
import { openTestStores, type TestStores } from '@meterd/core/testing';
import { call, startTestControl } from './helpers.js';
import { REPO } from './procs.js';
import type { ControlServer } from '../src/server.js';

/**
 * /api/v1/openapi.json covers every route of the public base URL: each API route the control API
 * registers, and each path ingest and the aggregator serve (read from their sources, since this
 * package may not import them), with the errors of each. helpers.ts's `call` validates every
 * answer of the end-to-end tests against the same document.
 */
let stores: TestStores;
let s: ControlServer;
let doc: { openapi: string; paths: Record<string, Record<string, { responses: Record<string, any> }>> };

before(async () => {
  stores = await openTestStores('ctlopenapi');
  s = await startTestControl(stores);
  doc = (await call(s.url, 'GET', '/api/v1/openapi.json')).json;
});
after(async () => {
  await s.close();
  await stores.close();
});

const template = (url: string) => url.replace(/:([A-Za-z_]+)/g, '{$1}');
/** Path parameters named differently by another service (:workspaceId) are the same path. */
const shape = (path: string) => path.replace(/\{[^}]+\}/g, '{}');

test('every API route the control API registers is documented, and none is hidden', () => {
  const api = s.app.routeTable.filter((r) => /^\/(api|webhooks)\//.test(r.url) && r.url !== '/api/v1/openapi.json');
  assert.ok(api.length > 20);
  for (const r of api) {
    assert.equal(r.hidden, false, `${r.method} ${r.url} is hidden from the document`);
    assert.ok(doc.paths[template(r.url)]?.[r.method], `${r.method.toUpperCase()} ${r.url} is missing`);
  }
});

test('the paths ingest and the aggregator serve are documented (ingest, usage)', () => {
  const served = [
    ...readFileSync(join(REPO, 'ingest/src/app.ts'), 'utf8').matchAll(/\.post\('(\/api\/[^']+)'/g),
    ...readFileSync(join(REPO, 'aggregator/src/http/server.ts'), 'utf8').matchAll(/'(\/api\/v1\/[^']+)'/g),
  ].map((m) => shape(template(m[1]!)));
  assert.deepEqual(served.sort(), [
    '/api/v1/meter',
    '/api/v1/meter/batch',
    '/api/v1/workspaces/{}/meters/{}/usage',
    '/api/v1/workspaces/{}/usage',
  ]);
  const documented = new Set(Object.keys(doc.paths).map(shape));
  for (const p of served) assert.ok(documented.has(p), `${p} is missing`);
  assert.ok(doc.paths['/api/v1/meter']!.post!.responses['202']);
  assert.ok(doc.paths['/api/v1/workspaces/{id}/usage']!.get!.responses['200']);
});

test('every operation lists its errors, each with a registered code and its status', () => {
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const errors = Object.entries(op.responses).filter(([status]) => /^[45]\d\d$/.test(status));
      // The public catalog takes no input and no key: its only error is a 500. Every other operation can be refused.
      if (path !== '/api/v1/catalog')
        assert.ok(
          errors.some(([status]) => status.startsWith('4')),
          `${method} ${path} lists no client errors`,
        );
      for (const [status, r] of errors) {
        const codes: string[] = r.content['application/json'].schema.properties.error.properties.code.enum;
        for (const c of codes) {
          assert.ok(c in ERROR_CODES, `${c} is not a registered code`);
          assert.equal(String(ERROR_CODES[c as keyof typeof ERROR_CODES].status), status, `${method} ${path} ${c}`);
        }
      }
    }
  }
  const create = doc.paths['/api/v1/workspaces/{id}/api-keys']!.post! as unknown as {
    parameters: { name: string }[];
    responses: Record<string, any>;
  };
  assert.ok(create.parameters.some((p) => p.name === 'Idempotency-Key'));
  assert.ok(
    create.responses['409'].content['application/json'].schema.properties.error.properties.code.enum.includes(
      'idempotency_key_reused',
    ),
  );
});
