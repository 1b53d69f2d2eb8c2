-- Placeholder for migration 008, which another branch (billing-sync's lease column) owns: the
-- migration runner refuses a gap, so this branch carries an empty 008 until that one is merged.
-- Drop this file when merging that branch.
SELECT 1;
