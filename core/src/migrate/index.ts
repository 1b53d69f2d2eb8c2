export { migratePostgres } from './postgres.js';
export { migrateClickHouse } from './clickhouse.js';
export { readMigrations } from './files.js';
