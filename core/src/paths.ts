import { fileURLToPath } from 'node:url';

/** The repository root, found from this file's place in core/dist/src. */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const PG_MIGRATIONS_DIR = fileURLToPath(new URL('../../../infra/postgres/', import.meta.url));
export const CH_MIGRATIONS_DIR = fileURLToPath(new URL('../../../infra/clickhouse/', import.meta.url));
