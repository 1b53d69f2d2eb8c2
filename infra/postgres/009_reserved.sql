-- Placeholder for migration 009, which another branch (environments, 009_environments.sql) owns:
-- the migration runner refuses a gap, so this branch carries an empty 009 until that one is merged.
-- Drop this file when merging that branch.
SELECT 1;
