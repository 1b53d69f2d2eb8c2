export { openTestStores, type TestStores } from './stores.js';
export { runUntilExit, moduleUrl, type ExitReport } from './exits.js';
export { GateProxy } from './gate-proxy.js';
export { REPO_ROOT, PG_MIGRATIONS_DIR, CH_MIGRATIONS_DIR } from './paths.js';
export { OpenApiCheck, checkFor } from './openapi-check.js';
export { startPgBouncer, type TestPgBouncer } from './pgbouncer.js';
