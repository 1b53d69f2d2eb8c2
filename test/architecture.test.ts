import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { ROOT } from './support/services.js';

/**
 * The import rules of docs/architecture.md, checked on every TypeScript source: a service imports
 * only core (through `@meterd/core` or `@meterd/core/testing`) and the public client library
 * (`@meterd/client`), never another service; core imports no service; the client imports nothing
 * of meterd (it is published on its own, with no dependencies); relative imports stay inside their
 * own package. The root test/ folder (end-to-end) is exempt: it drives every service.
 */
const SERVICES = ['ingest', 'aggregator', 'billing-sync', 'control-api', 'stripe-local', 'bench'];
// tools/ (the supervisor, the migration and docs commands) is repository tooling: it may import core only.
const PACKAGES = ['core', 'client', 'tools', ...SERVICES];

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name === 'dist') continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sources(p));
    else if (name.endsWith('.ts')) out.push(p);
  }
  return out;
}

const IMPORT = /(?:^|\s)(?:import|export)\s[^'"`;]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

function violations(pkg: string): string[] {
  const found: string[] = [];
  for (const file of sources(join(ROOT, pkg))) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(IMPORT)) {
      const spec = (m[1] ?? m[2])!;
      const where = `${relative(ROOT, file)} imports '${spec}'`;
      if (spec.startsWith('@meterd/')) {
        const target = spec.slice('@meterd/'.length).split('/')[0]!;
        // The client's examples import it by its published name, as a user would.
        if (pkg === 'client' ? target !== 'client' : target !== 'core' && target !== 'client') found.push(where);
      } else if (spec.startsWith('.')) {
        const target = relative(ROOT, resolve(dirname(file), spec)).split(sep)[0]!;
        if (target !== pkg) found.push(where);
      }
    }
  }
  return found;
}

for (const pkg of PACKAGES) {
  const rule =
    pkg === 'core'
      ? 'no service'
      : pkg === 'client'
        ? 'nothing of meterd'
        : 'only core and the client, never another service';
  test(`${pkg} imports ${rule}`, () => {
    assert.deepEqual(violations(pkg), []);
  });
}

test('the rule sees a violation when there is one (a service importing another, a relative path out of its package)', () => {
  const probe = (text: string): string[] => [...text.matchAll(IMPORT)].map((m) => (m[1] ?? m[2])!);
  assert.deepEqual(
    probe(
      `import { x } from '@meterd/ingest';\nconst y = await import('../../aggregator/src/app.js');\nexport { z } from './z.js';`,
    ),
    ['@meterd/ingest', '../../aggregator/src/app.js', './z.js'],
  );
});
