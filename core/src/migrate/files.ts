import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MeterdError } from '../errors/meterd-error.js';

export interface Migration {
  name: string;
  sql: string;
  checksum: string;
}

const NAME_RE = /^(\d{3})_[a-z0-9_]+\.sql$/;

/** Migrations of a folder in order. Names are NNN_name.sql; a gap or a duplicate number is an error. */
export async function readMigrations(dir: string): Promise<Migration[]> {
  const names = (await readdir(dir)).filter((n) => n.endsWith('.sql')).sort();
  const out: Migration[] = [];
  for (const [i, name] of names.entries()) {
    const m = NAME_RE.exec(name);
    if (!m) throw new MeterdError('METERD_MIGRATION_NAME', `migration ${join(dir, name)} is not named NNN_name.sql`);
    if (Number(m[1]) !== i + 1)
      throw new MeterdError(
        'METERD_MIGRATION_NAME',
        `migration ${name} breaks the sequence in ${dir}: expected number ${String(i + 1).padStart(3, '0')}`,
      );
    const sql = await readFile(join(dir, name), 'utf8');
    out.push({ name, sql, checksum: createHash('sha256').update(sql).digest('hex') });
  }
  return out;
}

/** ClickHouse takes one statement per request: split on semicolons that end a line. */
export function splitStatements(sql: string): string[] {
  return sql
    .split(/;\s*(?:\n|$)/)
    .map((s) => s.replace(/^\s*--.*$/gm, '').trim())
    .filter((s) => s.length > 0);
}

export class MigrationError extends MeterdError {
  constructor(store: string, name: string, cause: unknown) {
    super(
      'METERD_MIGRATION_FAILED',
      `${store} migration ${name} failed: ${(cause as Error)?.message ?? String(cause)}`,
      { cause },
    );
  }
}

/**
 * Applies, in order, each migration `done` (name → checksum) does not hold, and returns their names.
 * An applied migration whose file changed is refused: migrations are append-only, so that is always
 * a mistake.
 */
export async function applyPending(
  store: string,
  migrations: readonly Migration[],
  done: ReadonlyMap<string, string>,
  apply: (m: Migration) => Promise<void>,
): Promise<string[]> {
  const applied: string[] = [];
  for (const m of migrations) {
    const prior = done.get(m.name);
    if (prior !== undefined) {
      if (prior !== m.checksum)
        throw new MeterdError(
          'METERD_MIGRATION_CHANGED',
          `${store} migration ${m.name} was edited after it was applied; add a new migration instead`,
        );
      continue;
    }
    try {
      await apply(m);
    } catch (err) {
      throw new MigrationError(store, m.name, err);
    }
    applied.push(m.name);
  }
  return applied;
}
