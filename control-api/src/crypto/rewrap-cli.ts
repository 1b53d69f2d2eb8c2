import { ConfigError } from '@meterd/core/config';
import { isMeterdError } from '@meterd/core/errors';
import { createPool } from '@meterd/core/store';
import { loadControlConfig } from '../config.js';
import { SecretBox } from './secret-box.js';
import { rewrapAll } from './rewrap.js';

/** `npm run secrets:rewrap`: re-seals stored secrets under SECRETS_KEY (see docs/security.md, key rotation). */
try {
  const cfg = loadControlConfig();
  const pool = createPool(cfg.DATABASE_URL, 2, { statementTimeoutMs: cfg.DATABASE_STATEMENT_TIMEOUT_MS });
  try {
    const done = await rewrapAll(pool, new SecretBox(cfg.SECRETS_KEY, cfg.SECRETS_KEYS_OLD));
    for (const [table, n] of Object.entries(done)) console.log(`${table}: ${n} re-sealed`);
  } finally {
    await pool.end();
  }
} catch (err) {
  console.error(err instanceof ConfigError || isMeterdError(err) ? `secrets:rewrap: ${err.message}` : err);
  process.exit(1);
}
