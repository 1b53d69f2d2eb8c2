import { type Pool } from '@meterd/core/store';
import { responseAad } from '../services/idempotency.js';
import type { SecretBox } from './secret-box.js';

interface Sealed {
  table: string;
  column: string;
  /** The columns that name its row. */
  key: readonly string[];
  /** The associated data a value is sealed with: the extra columns it is built from, and how. */
  aad?: { columns: string; of: (r: Record<string, string>) => string };
}

/** Every column holding SecretBox values. */
const SEALED: readonly Sealed[] = [
  { table: 'webhook_endpoints', column: 'secret_enc', key: ['id'] },
  { table: 'provisions', column: 'config_enc', key: ['id'] },
  { table: 'shopify_connections', column: 'access_token_enc', key: ['workspace_id', 'shop_domain'] },
  {
    table: 'idempotency_keys',
    column: 'response',
    key: ['scope', 'key'],
    aad: {
      columns: `, encode(fingerprint, 'hex') AS fp`,
      of: (r) => responseAad(r.scope!, r.key!, Buffer.from(r.fp!, 'hex')),
    },
  },
];

/**
 * Re-seals every stored secret that is not under the current SECRETS_KEY (the last step of a
 * rotation, after which the old key can be dropped). A row changed meanwhile is left alone: the
 * update only applies if the value is still the one read. Returns how many were re-sealed per table.
 */
export async function rewrapAll(pool: Pool, box: SecretBox): Promise<Record<string, number>> {
  const done: Record<string, number> = {};
  for (const t of SEALED) {
    const cols = t.key.join(', ');
    const { rows } = await pool.query<Record<string, string>>(
      `SELECT ${cols}${t.aad?.columns ?? ''}, ${t.column} AS sealed FROM ${t.table} WHERE ${t.column} IS NOT NULL`,
    );
    let n = 0;
    for (const r of rows) {
      if (!box.isStale(r.sealed!)) continue;
      const aad = t.aad?.of(r);
      const fresh = box.seal(box.open(r.sealed!, aad), aad);
      const where = t.key.map((k, i) => `${k} = $${i + 3}`).join(' AND ');
      const res = await pool.query(`UPDATE ${t.table} SET ${t.column} = $1 WHERE ${t.column} = $2 AND ${where}`, [
        fresh,
        r.sealed,
        ...t.key.map((k) => r[k]),
      ]);
      n += res.rowCount ?? 0;
    }
    done[t.table] = n;
  }
  return done;
}
