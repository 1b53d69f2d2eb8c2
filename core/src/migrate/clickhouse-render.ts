import { MeterdError } from '../errors/meterd-error.js';
import { splitStatements, type Migration } from './files.js';

/**
 * One source of ClickHouse migrations for a single server and for a cluster (docs/operations.md,
 * "ClickHouse cluster"). The files in infra/clickhouse/ are written for one server and never edited
 * (append-only, checksummed). On a cluster each statement is rewritten here:
 *
 * - `CREATE TABLE X (…) ENGINE = E(args) …` becomes a local table `X_local` on every node with
 *   `ReplicatedE('/clickhouse/tables/{shard}/<db>/X_local/<NNN>', '{replica}', args)`, and `X` becomes
 *   a Distributed table over it, sharded by `cityHash64(workspace_id)` (every copy of a workspace's
 *   rows, and so every copy of an idempotency triple, lives on one shard: dedupe, FINAL and the
 *   readers' argMax stay shard-local). A table without `workspace_id` (aggregator_state) lives on
 *   the first shard (key 0). The migration number in the ZooKeeper path keeps a table re-created by
 *   a later migration (003, 004 rename `events` away and create it anew) apart from the old one.
 * - The Distributed table declares MATERIALIZED columns as ALIAS of the same expression: 18.16's
 *   Distributed insert sends materialized columns on to the shards, which refuse them (Code 44), and
 *   an ALIAS is computed from the same columns as the local table's stored value.
 * - `ALTER TABLE X …` alters `X_local` ON CLUSTER (replicated ALTERs run once per shard) and
 *   re-creates the Distributed `X` with the new columns: 18.16 refuses ALTER … ON CLUSTER of a
 *   non-replicated table when the cluster has internal_replication (Code 371).
 * - `RENAME TABLE a TO b` renames `a_local` ON CLUSTER and re-creates the Distributed table over
 *   `b_local` (a renamed Distributed table would still read `a_local`'s new namesake).
 * - `DROP TABLE` drops both; `INSERT … SELECT` runs through the Distributed tables, and is skipped
 *   when its source table is empty on the cluster (each of ours selects rows or groups by a key, so
 *   an empty source inserts nothing; and 18.16's Distributed has no `_part`, which 004 reads).
 */
export interface ClusterTarget {
  /** Cluster name in the servers' remote_servers (CLICKHOUSE_CLUSTER). */
  cluster: string;
  database: string;
}

export interface RenderedStatement {
  sql: string;
  /** Skip the statement when this (Distributed) table holds no row. */
  skipWhenEmpty?: string;
}

interface TableShape {
  columns: string[];
  shardKey: string;
}

const CREATE_RE = /^CREATE TABLE IF NOT EXISTS (\w+) \(([\s\S]*)\)\s*ENGINE = (\w+)\(([^)]*)\)([\s\S]*)$/;
const ALTER_RE = /^ALTER TABLE (\w+) ([\s\S]*)$/;
const RENAME_RE = /^RENAME TABLE (\w+) TO (\w+)$/;
const DROP_RE = /^DROP TABLE IF EXISTS (\w+)$/;
const INSERT_SELECT_RE = /^INSERT INTO \w+[\s\S]*?\bSELECT\b[\s\S]*?\bFROM (\w+)/;

/** A migration's statements as a single server runs them: the file's SQL unchanged. */
export function renderSingle(m: Migration): RenderedStatement[] {
  return splitStatements(m.sql).map((sql) => ({ sql }));
}

/**
 * Every migration's statements for a cluster, in order. Migrations are rendered as a sequence (a
 * later ALTER or RENAME needs the columns an earlier CREATE declared), whichever were applied.
 */
export function renderCluster(migrations: readonly Migration[], t: ClusterTarget): Map<string, RenderedStatement[]> {
  const tables = new Map<string, TableShape>();
  const out = new Map<string, RenderedStatement[]>();
  const on = `ON CLUSTER ${t.cluster}`;
  const distributed = (name: string, shape: TableShape): string =>
    `CREATE TABLE IF NOT EXISTS ${name} ${on} (${shape.columns.map(distColumn).join(', ')}) ` +
    `ENGINE = Distributed(${t.cluster}, ${t.database}, ${name}_local, ${shape.shardKey})`;
  const known = (name: string, m: Migration): TableShape => {
    const s = tables.get(name);
    if (s === undefined) throw renderError(m, `table ${name} is not created by an earlier migration`);
    return s;
  };
  for (const m of migrations) {
    const stmts: RenderedStatement[] = [];
    const number = m.name.slice(0, 3);
    for (const sql of splitStatements(m.sql)) {
      let g: RegExpExecArray | null;
      if ((g = CREATE_RE.exec(sql))) {
        const [, name, body, engine, args, rest] = g as unknown as [string, string, string, string, string, string];
        const columns = splitTopLevel(body);
        const shape: TableShape = {
          columns,
          shardKey: columns.some((c) => columnName(c) === 'workspace_id') ? 'cityHash64(workspace_id)' : '0',
        };
        tables.set(name, shape);
        const path = `'/clickhouse/tables/{shard}/${t.database}/${name}_local/${number}', '{replica}'`;
        const replArgs = args.trim() === '' ? path : `${path}, ${args.trim()}`;
        stmts.push({
          sql: `CREATE TABLE IF NOT EXISTS ${name}_local ${on} (${body}) ENGINE = Replicated${engine}(${replArgs})${rest}`,
        });
        stmts.push({ sql: distributed(name, shape) });
      } else if ((g = ALTER_RE.exec(sql))) {
        const [, name, clauses] = g as unknown as [string, string, string];
        const shape = known(name, m);
        for (const clause of splitTopLevel(clauses)) {
          const add = /^ADD COLUMN (?:IF NOT EXISTS )?([\s\S]+)$/.exec(clause);
          if (!add) throw renderError(m, `only ADD COLUMN is templated for a cluster: ${clause}`);
          shape.columns.push(add[1]!);
        }
        stmts.push({ sql: `ALTER TABLE ${name}_local ${on} ${clauses}` });
        stmts.push({ sql: `DROP TABLE IF EXISTS ${name} ${on}` });
        stmts.push({ sql: distributed(name, shape) });
      } else if ((g = RENAME_RE.exec(sql))) {
        const [, from, to] = g as unknown as [string, string, string];
        const shape = known(from, m);
        tables.delete(from);
        tables.set(to, shape);
        stmts.push({ sql: `RENAME TABLE ${from}_local TO ${to}_local ${on}` });
        stmts.push({ sql: `DROP TABLE IF EXISTS ${from} ${on}` });
        stmts.push({ sql: distributed(to, shape) });
      } else if ((g = DROP_RE.exec(sql))) {
        const name = g[1]!;
        tables.delete(name);
        stmts.push({ sql: `DROP TABLE IF EXISTS ${name} ${on}` });
        stmts.push({ sql: `DROP TABLE IF EXISTS ${name}_local ${on}` });
      } else if ((g = INSERT_SELECT_RE.exec(sql))) {
        stmts.push({ sql, skipWhenEmpty: g[1]! });
      } else {
        throw renderError(m, `no cluster form for the statement: ${sql.slice(0, 120)}`);
      }
    }
    out.set(m.name, stmts);
  }
  return out;
}

/** A column of the Distributed table: the local table's, with MATERIALIZED read as ALIAS. */
function distColumn(def: string): string {
  return def.replace(/\bMATERIALIZED\b/, 'ALIAS');
}

function columnName(def: string): string {
  return def.trim().split(/\s+/)[0]!;
}

/** Splits on commas outside parentheses and quotes. */
function splitTopLevel(s: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let quote = false;
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === "'" && s[i - 1] !== '\\') quote = !quote;
    else if (!quote && c === '(') depth++;
    else if (!quote && c === ')') depth--;
    else if (!quote && depth === 0 && c === ',') {
      parts.push(s.slice(start, i).trim());
      start = i + 1;
    }
  }
  parts.push(s.slice(start).trim());
  return parts.filter((p) => p.length > 0);
}

function renderError(m: Migration, why: string): MeterdError {
  return new MeterdError('METERD_MIGRATION_TEMPLATE', `migration ${m.name} cannot be rendered for a cluster: ${why}`);
}
