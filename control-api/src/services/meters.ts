import { ApiError } from '@meterd/core/errors';
import { newId } from '@meterd/core/ids';
import {
  METER_COLUMNS,
  METER_LIMITS,
  meterFromRow,
  stripeBillingProblem,
  type MeterAggregation,
  type MeterDefinition,
  meterBackfillErrorOf,
  type MeterBackfillError,
} from '@meterd/core/meters';
import { inTransaction, type Pool, type PoolClient } from '@meterd/core/store';

/**
 * Meter definitions of a workspace (docs/meters.md): created, listed, renamed and soft-deleted. The
 * JSON schemas of routes/meters.ts check shapes and formats; the rules that span fields, the limits
 * and uniqueness live here, so the public API and the dashboard share them.
 */

/** How far back a new meter is backfilled: the window ingest accepts `occurred_at` in (docs/api.md §3). */
export const BACKFILL_DAYS = 35;

export interface MeterInput {
  slug: string;
  name?: string;
  description?: string;
  event_types: string[];
  aggregation: MeterAggregation;
  value_field?: string | null;
  group_by?: string[];
  stripe_event_name?: string | null;
}

/** What PATCH may change; the computation fields are there only to be refused when they differ. */
export type MeterPatch = Partial<MeterInput>;

/** The fields whose change would make the meter's rollups wrong: never changed after creation. */
const IMMUTABLE = ['slug', 'event_types', 'aggregation', 'value_field', 'group_by'] as const;

/**
 * A meter as the API shows it: core's definition (meterFromRow) less the workspace (the path names
 * it), dates as ISO strings and the backfill's progress nested.
 */
export type MeterView = Omit<MeterDefinition, 'workspace_id' | 'created_at_ms' | 'updated_at_ms' | 'backfill_state'> & {
  created_at: string;
  updated_at: string;
  backfill: {
    state: MeterDefinition['backfill_state'];
    from: string | null;
    until: string | null;
    done_before: string | null;
    /** Why the state is failed: a stable code (core's METER_BACKFILL_ERRORS) and the details. */
    error: MeterBackfillError | null;
  };
};

type Row = Parameters<typeof meterFromRow>[0] & {
  backfill_from: Date | null;
  backfill_until: Date | null;
  backfill_done_before: Date | null;
  backfill_error: string | null;
};

const COLS = `${METER_COLUMNS}, backfill_from, backfill_until, backfill_done_before, backfill_error`;

/** A live meter of workspace $1 named by $2, its id or its slug (an id wins over a slug spelt the same). */
export const METER_BY_KEY =
  'WHERE workspace_id = $1 AND deleted_at IS NULL AND (id = $2 OR slug = $2) ORDER BY id = $2 DESC LIMIT 1';

const iso = (d: Date | null) => (d === null ? null : d.toISOString());

function view(r: Row): MeterView {
  const { workspace_id: _workspace, created_at_ms, updated_at_ms, backfill_state, ...definition } = meterFromRow(r);
  return {
    ...definition,
    created_at: new Date(created_at_ms).toISOString(),
    updated_at: new Date(updated_at_ms).toISOString(),
    backfill: {
      state: backfill_state,
      from: iso(r.backfill_from),
      until: iso(r.backfill_until),
      done_before: iso(r.backfill_done_before),
      error: meterBackfillErrorOf(r.backfill_error),
    },
  };
}

/** `field`: the body field that named the meter (an alert's `meter`); none when the path did. */
export function meterNotFound(meter: string, field?: string): ApiError {
  return new ApiError('resource_not_found', `no meter ${meter} in this workspace`, field);
}

/** The unique indexes of 011_meters.sql, each mapped to the code that names what collided. */
function uniqueViolation(err: unknown, m: { slug?: string; stripe_event_name?: string | null }): ApiError | undefined {
  const e = err as { code?: string; constraint?: string };
  if (e.code !== '23505') return undefined;
  if (e.constraint === 'meters_workspace_slug_key')
    return new ApiError('meter_slug_taken', `the workspace already has a meter ${m.slug ?? ''}`, 'slug');
  if (e.constraint === 'meters_workspace_stripe_event_key')
    return new ApiError(
      'stripe_event_name_taken',
      `another meter of the workspace already pushes to the Stripe event_name ${m.stripe_event_name ?? ''}`,
      'stripe_event_name',
    );
  return undefined;
}

/** value_field is null exactly for count, as 011_meters.sql's CHECK says; refused here with the field named. */
function checkValueField(aggregation: MeterAggregation, valueField: string | null): void {
  if (aggregation === 'count' && valueField !== null)
    throw new ApiError(
      'invalid_field',
      'value_field must be null (or left out) when aggregation is count',
      'value_field',
    );
  if (aggregation !== 'count' && valueField === null)
    throw new ApiError(
      'invalid_field',
      `value_field is required for ${aggregation}: quantity, gmv_cents or properties.<key>`,
      'value_field',
    );
}

/** A meter Stripe cannot bill exactly is refused a stripe_event_name (core's stripeBillingProblem says why). */
function checkBillable(m: Pick<MeterDefinition, 'aggregation' | 'group_by'>): void {
  const problem = stripeBillingProblem(m);
  if (problem !== undefined) throw new ApiError('invalid_field', problem.message, problem.field);
}

const sameValue = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

export class MeterService {
  constructor(private readonly pool: Pool) {}

  /**
   * Creates a meter with its backfill pending over the BACKFILL_DAYS before the hour after now: the
   * aggregator fills [backfill_from, backfill_until) from the raw events and moves
   * backfill_done_before down as it goes (docs/meters.md). The count and the insert run under a lock
   * on the workspace row, so concurrent creates cannot both take the last place.
   */
  async create(workspaceId: string, m: MeterInput): Promise<MeterView> {
    const valueField = m.value_field ?? null;
    checkValueField(m.aggregation, valueField);
    if (m.stripe_event_name != null) checkBillable({ aggregation: m.aggregation, group_by: m.group_by ?? [] });
    const max = METER_LIMITS.maxMetersPerWorkspace;
    return inTransaction(this.pool, async (c) => {
      await c.query('SELECT 1 FROM workspaces WHERE id = $1 FOR UPDATE', [workspaceId]);
      const { rows: n } = await c.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM meters WHERE workspace_id = $1 AND deleted_at IS NULL',
        [workspaceId],
      );
      if (n[0]!.n >= max)
        throw new ApiError(
          'meter_limit_exceeded',
          `a workspace may have ${max} meters; delete one before adding another`,
        );
      try {
        const { rows } = await c.query<Row>(
          `INSERT INTO meters (id, workspace_id, slug, name, description, event_types, aggregation, value_field,
             group_by, stripe_event_name, backfill_state, backfill_until, backfill_from, backfill_done_before)
           SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', u, u - make_interval(days => $11), u
             FROM (SELECT date_trunc('hour', now()) + interval '1 hour' AS u) AS b
           RETURNING ${COLS}`,
          [
            newId('mtr'),
            workspaceId,
            m.slug,
            m.name ?? '',
            m.description ?? '',
            m.event_types,
            m.aggregation,
            valueField,
            m.group_by ?? [],
            m.stripe_event_name ?? null,
            BACKFILL_DAYS,
          ],
        );
        return view(rows[0]!);
      } catch (err) {
        throw uniqueViolation(err, m) ?? err;
      }
    });
  }

  async list(workspaceId: string): Promise<MeterView[]> {
    const { rows } = await this.pool.query<Row>(
      `SELECT ${COLS} FROM meters WHERE workspace_id = $1 AND deleted_at IS NULL ORDER BY slug`,
      [workspaceId],
    );
    return rows.map(view);
  }

  /** A live meter by slug or id (an id wins over a slug spelt the same). */
  async get(workspaceId: string, meter: string, c: Pool | PoolClient = this.pool): Promise<MeterView> {
    const { rows } = await c.query<Row>(`SELECT ${COLS} FROM meters ${METER_BY_KEY}`, [workspaceId, meter]);
    if (rows.length === 0) throw meterNotFound(meter);
    return view(rows[0]!);
  }

  /** A live meter as core's readers take it (by slug or id, as get). */
  async definition(workspaceId: string, meter: string): Promise<MeterDefinition> {
    const { rows } = await this.pool.query<Parameters<typeof meterFromRow>[0]>(
      `SELECT ${METER_COLUMNS} FROM meters ${METER_BY_KEY}`,
      [workspaceId, meter],
    );
    if (rows.length === 0) throw meterNotFound(meter);
    return meterFromRow(rows[0]!);
  }

  /**
   * Changes name, description or stripe_event_name. A computation field (or the slug) sent with its
   * current value is accepted and changes nothing; with another value it is refused whole.
   */
  async update(workspaceId: string, meter: string, p: MeterPatch): Promise<MeterView> {
    return inTransaction(this.pool, async (c) => {
      const current = await this.get(workspaceId, meter, c);
      for (const f of IMMUTABLE)
        if (p[f] !== undefined && !sameValue(p[f], current[f]))
          throw new ApiError('meter_immutable', `${f} of a meter never changes after creation; create a new meter`, f);
      if (p.stripe_event_name != null) checkBillable(current);
      try {
        const { rows } = await c.query<Row>(
          `UPDATE meters SET name = coalesce($2, name), description = coalesce($3, description),
             stripe_event_name = CASE WHEN $4::boolean THEN $5 ELSE stripe_event_name END, updated_at = now()
            WHERE id = $1 AND deleted_at IS NULL RETURNING ${COLS}`,
          [
            current.id,
            p.name ?? null,
            p.description ?? null,
            p.stripe_event_name !== undefined,
            p.stripe_event_name ?? null,
          ],
        );
        // A concurrent delete took it between the read and the update.
        if (rows.length === 0) throw meterNotFound(meter);
        return view(rows[0]!);
      } catch (err) {
        throw uniqueViolation(err, p) ?? err;
      }
    });
  }

  /** Soft-deletes a meter (its slug and Stripe event_name are free again) and its alerts. */
  async remove(workspaceId: string, meter: string): Promise<MeterView> {
    return inTransaction(this.pool, async (c) => {
      const current = await this.get(workspaceId, meter, c);
      const { rows } = await c.query<Row>(
        `UPDATE meters SET deleted_at = now(), updated_at = now() WHERE id = $1 AND deleted_at IS NULL RETURNING ${COLS}`,
        [current.id],
      );
      // A concurrent delete took it between the read and the update.
      if (rows.length === 0) throw meterNotFound(meter);
      await c.query('UPDATE meter_alerts SET deleted_at = now() WHERE meter_id = $1 AND deleted_at IS NULL', [
        current.id,
      ]);
      return view(rows[0]!);
    });
  }
}
