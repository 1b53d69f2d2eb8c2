export { migratePostgres } from './postgres.js';
export { migrateClickHouse, type ClickHouseConnector } from './clickhouse.js';
export { readMigrations, splitStatements, MigrationError, type Migration } from './files.js';
