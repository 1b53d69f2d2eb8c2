import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../testing/paths.js';
import { ERROR_CODES } from './codes.js';
import { renderErrorsDoc } from './docs.js';

test('docs/errors.md documents every wire error code (regenerate with npm run docs:errors)', () => {
  const doc = readFileSync(join(REPO_ROOT, 'docs', 'errors.md'), 'utf8');
  for (const code of Object.keys(ERROR_CODES))
    assert.ok(doc.includes(`| \`${code}\` |`), `docs/errors.md lacks ${code}`);
  assert.equal(doc, renderErrorsDoc(), 'docs/errors.md is out of date: run npm run docs:errors');
});

test('codes are snake_case and statuses are 4xx/5xx', () => {
  for (const [code, { status }] of Object.entries(ERROR_CODES)) {
    assert.match(code, /^[a-z][a-z0-9_]*$/);
    assert.ok(status >= 400 && status < 600, code);
  }
});
