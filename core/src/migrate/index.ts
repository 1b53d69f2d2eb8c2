export { migratePostgres } from './postgres.js';
export { migrateClickHouse, takeMigrationLock, releaseMigrationLock, MIGRATION_LOCK_TABLE } from './clickhouse.js';
export { renderCluster, renderSingle, type RenderedStatement } from './clickhouse-render.js';
export { readMigrations } from './files.js';
