import { fileURLToPath } from 'node:url';

/** Where the repository's files are, for tests (this file sits in core/dist/src/testing). */
export const REPO_ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
export const PG_MIGRATIONS_DIR = fileURLToPath(new URL('../../../../infra/postgres/', import.meta.url));
export const CH_MIGRATIONS_DIR = fileURLToPath(new URL('../../../../infra/clickhouse/', import.meta.url));
