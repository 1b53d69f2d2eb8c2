-- One row per ingest instance (INGEST_INSTANCE: the StatefulSet pod name): the spool it writes and
-- whether that spool may hold acknowledged rows not yet in ClickHouse. Ingest refuses to start on
-- an empty spool while its row says `open` (the volume was lost or replaced); `npm run spool:lost`
-- accounts for the lost rows, keeps its report here and sets `lost` (docs/deploy.md). Kept in
-- Postgres, not Redis: the record must outlive a Redis that loses its data.
CREATE TABLE ingest_spools (
  instance text PRIMARY KEY,
  spool_id text NOT NULL,
  spool_created_at timestamptz NOT NULL,
  -- open: a process runs or ran on the spool and may have left rows unshipped;
  -- closed: the last process stopped with everything shipped; lost: accounted by spool:lost.
  state text NOT NULL CHECK (state IN ('open', 'closed', 'lost')),
  updated_at timestamptz NOT NULL DEFAULT now(),
  lost_report jsonb
);
