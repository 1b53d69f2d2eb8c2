import { Ajv, type ValidateFunction } from 'ajv';

/**
 * Checks answers against /api/v1/openapi.json: the HTTP helpers of the control API tests and the
 * end-to-end tests (control-api/test/helpers.ts `call`, test/support/api.ts `call`) run
 * every answer of an API path through it, so a status or body the document does not describe
 * fails the test that received it, and so does a route the document lacks.
 */
interface Operation {
  responses: Record<string, { content?: Record<string, { schema: unknown }> }>;
}
interface Doc {
  paths: Record<string, Record<string, Operation>>;
}

export class OpenApiCheck {
  private readonly ajv = new Ajv({ strict: false, validateFormats: false, allErrors: false });
  private readonly compiled = new Map<unknown, ValidateFunction>();
  private readonly templates: { re: RegExp; path: string }[];

  constructor(readonly doc: Doc) {
    this.templates = Object.keys(doc.paths).map((path) => ({
      path,
      re: new RegExp(`^${path.replace(/[.]/g, '\\.').replace(/\{[^}]+\}/g, '[^/]+')}$`),
    }));
  }

  /** Problems with one answer; empty when the document describes it. */
  check(method: string, url: string, status: number, contentType: string | null, body: string): string[] {
    const path = url.split('?')[0]!;
    const m = method.toLowerCase();
    const matches = this.templates.filter((t) => t.re.test(path));
    // A literal path (…/events/rejections) wins over a template that also matches it (…/events/{x}).
    const tpl = matches.find((t) => !t.path.includes('{')) ?? matches.find((t) => this.doc.paths[t.path]![m]);
    const op = tpl === undefined ? undefined : this.doc.paths[tpl.path]![m];
    if (op === undefined) {
      // An unknown route is the server's 404/405, not a gap in the document.
      if (status === 404 || status === 405) return [];
      return [`${method} ${path} answered ${status} but is not in the OpenAPI document`];
    }
    const r = op.responses[String(status)] ?? op.responses[`${String(status)[0]}XX`] ?? op.responses.default;
    if (r === undefined) return [`${method} ${tpl!.path}: status ${status} is not documented`];
    const schema = r.content?.['application/json']?.schema;
    if (schema === undefined || !(contentType ?? '').includes('application/json')) return [];
    let v = this.compiled.get(schema);
    if (v === undefined) this.compiled.set(schema, (v = this.ajv.compile(schema as object)));
    let json: unknown;
    try {
      json = JSON.parse(body);
    } catch {
      return [`${method} ${tpl!.path} ${status}: the body is not JSON`];
    }
    if (v(json)) return [];
    return [`${method} ${tpl!.path} ${status}: ${this.ajv.errorsText(v.errors)} in ${body.slice(0, 300)}`];
  }
}

const docs = new Map<string, Promise<OpenApiCheck | null>>();

/** The check for a base URL, from the document it serves; null when it serves none (stripe-local, a receiver). */
export function checkFor(base: string): Promise<OpenApiCheck | null> {
  const origin = new URL(base).origin;
  let p = docs.get(origin);
  if (p === undefined) {
    p = fetch(new URL('/api/v1/openapi.json', origin)).then(
      async (r) => (r.ok ? new OpenApiCheck((await r.json()) as Doc) : null),
      () => null,
    );
    docs.set(origin, p);
  }
  return p;
}
