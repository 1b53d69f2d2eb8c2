import { ERROR_CODES } from './codes.js';

/** docs/errors.md, generated from the registry so the two never drift (`npm run docs:errors`). */
export function renderErrorsDoc(): string {
  let out = `# Error codes

Every 4xx and 5xx answer of every meterd HTTP service has this body:

\`\`\`json
{ "error": { "code": "invalid_field", "message": "quantity must be a whole number", "field": "quantity" } }
\`\`\`

\`code\` is stable: branch on it, never on \`message\`. \`field\` is present when the error is about
one request field. In \`POST /api/v1/meter/batch\`, per-event errors appear in \`results[i].error\`
with the same shape while the batch itself is answered 202.

This file is generated from \`core/src/errors/codes.ts\` by \`npm run docs:errors\`; a test fails when
they differ.

| code | HTTP status | meaning |
|---|---|---|
`;
  for (const [code, { status, summary }] of Object.entries(ERROR_CODES))
    out += `| \`${code}\` | ${status} | ${summary.replace(/\|/g, '\\|')} |\n`;
  return out;
}
