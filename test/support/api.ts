import { checkFor } from '@meterd/core/testing';

export interface Answer {
  status: number;
  headers: Headers;
  text: string;
  json: any;
}

/**
 * The end-to-end tests' HTTP helper: every answer of an API path, whichever service sent it (ingest,
 * the aggregator, the control API), is checked against the OpenAPI document the control API at
 * `documentBase` serves, so a status or body the document does not describe, or a route it lacks,
 * fails the test that received it (core/testing's OpenApiCheck, as in the control API's tests).
 */
export function apiClient(documentBase: string) {
  return async function call(
    base: string,
    method: string,
    path: string,
    o: { token?: string; body?: unknown; headers?: Record<string, string> } = {},
  ): Promise<Answer> {
    const headers: Record<string, string> = { ...(o.headers ?? {}) };
    if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
    if (o.body !== undefined) headers['content-type'] ??= 'application/json';
    const res = await fetch(new URL(path, base), {
      method,
      headers,
      ...(o.body === undefined ? {} : { body: JSON.stringify(o.body) }),
      redirect: 'manual',
      signal: AbortSignal.timeout(30_000),
    });
    const text = await res.text();
    if (/^\/api\//.test(path) && !path.startsWith('/api/v1/openapi.json')) {
      const check = await checkFor(documentBase);
      if (check === null) throw new Error(`no OpenAPI document at ${documentBase}`);
      const problems = check.check(method, path, res.status, res.headers.get('content-type'), text);
      if (problems.length > 0) throw new Error(`OpenAPI: ${problems.join('; ')}`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers, text, json };
  };
}
