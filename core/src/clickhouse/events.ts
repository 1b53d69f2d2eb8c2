import { CH_TABLES } from '../contracts/tables.js';

/**
 * The one rule that picks the surviving copy of a (workspace_id, event_type, idempotency_key)
 * triple in `events`, shared by every reader (aggregator rollups and reconcile, billing's raw
 * source). Copies exist when a spool segment is replayed (identical rows) or when a retry reaches
 * ingest after Redis forgot the key (a new event id, a later received_at, and a new occurred_at
 * when the client left it out, possibly in another hour).
 *
 * The winner is the copy with the highest `ver` (infra/clickhouse/003_events_winner.sql): the
 * earliest received second, ties broken by a hash of the event id. ReplacingMergeTree(ver) keeps
 * exactly that copy when it merges, so readers and merges agree before and after a merge: the
 * first copy ingest accepted is the event, later copies never count, wherever their hour is.
 */
export const WINNER = 'ver';

/**
 * One row per triple: the winning copy's columns as q (quantity), g (gmv_cents), c (currency),
 * o (occurred_at), r (received_at). `where` picks candidate rows (it may bound time and
 * workspace); every copy of each candidate triple is then compared, not only the copies `where`
 * matched, so that a copy in the range never counts when the winner lies outside it. `keep` is a
 * condition on the winner (e.g. its hour), applied after the winner is known. `scope`, when given,
 * must hold for every copy of every candidate (a workspace list does: copies share the workspace).
 */
export function winningEventsSql(
  where: string,
  keep: (o: string) => string,
  scope?: string,
  /** Also the winner's properties as pk (keys) and pv (values): meters read them, the built-in rollups do not. */
  withProperties = false,
): string {
  // `scope` (e.g. the workspaces of `where`) prunes the copy search by the sort key's first column:
  // a tuple IN alone cannot use a key whose second column is the hour.
  const props = withProperties ? `, argMax(prop_keys, ${WINNER}) AS pk, argMax(prop_values, ${WINNER}) AS pv` : '';
  return `SELECT workspace_id, event_type, idempotency_key,
      argMax(quantity, ${WINNER}) AS q, argMax(gmv_cents, ${WINNER}) AS g, argMax(currency, ${WINNER}) AS c,
      argMax(occurred_at, ${WINNER}) AS o, argMax(received_at, ${WINNER}) AS r${props}
    FROM ${CH_TABLES.events}
    WHERE ${scope === undefined ? '' : `${scope} AND `}(workspace_id, event_type, idempotency_key) IN (SELECT workspace_id, event_type, idempotency_key FROM ${CH_TABLES.events} WHERE ${where})
    GROUP BY workspace_id, event_type, idempotency_key
    HAVING ${keep('o')}`;
}
