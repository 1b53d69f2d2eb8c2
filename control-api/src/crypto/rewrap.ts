import { type Pool } from '@meterd/core/store';
import type { SecretBox } from './secret-box.js';

/** Every column holding SecretBox values, with the columns that name its row. */
const SEALED = [
  { table: 'webhook_endpoints', column: 'secret_enc', key: ['id'] },
  { table: 'provisions', column: 'config_enc', key: ['id'] },
  { table: 'shopify_connections', column: 'access_token_enc', key: ['workspace_id', 'shop_domain'] },
] as const;

/**
 * Re-seals every stored secret that is not under the current SECRETS_KEY (the last step of a
 * rotation, after which the old key can be dropped). A row changed meanwhile is left alone: the
 * update only applies if the value is still the one read. Returns how many were re-sealed per table.
 */
export async function rewrapAll(pool: Pool, box: SecretBox): Promise<Record<string, number>> {
  const done: Record<string, number> = {};
  for (const t of SEALED) {
    const cols = t.key.join(', ');
    const { rows } = await pool.query<Record<string, string>>(`SELECT ${cols}, ${t.column} AS sealed FROM ${t.table}`);
    let n = 0;
    for (const r of rows) {
      if (!box.isStale(r.sealed!)) continue;
      const fresh = box.seal(box.open(r.sealed!));
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
