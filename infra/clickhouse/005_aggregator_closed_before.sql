-- The aggregator's CLOSED mark in a unit billing can use without knowing the aggregator's close
-- delay: every hour ending at or before `closed_before` (server seconds) has been recomputed
-- exactly (closed). Billing bills only those hours; until an upgraded aggregator writes it, 0
-- holds billing back rather than letting it read open hours.
ALTER TABLE aggregator_state ADD COLUMN closed_before UInt64 DEFAULT 0;
