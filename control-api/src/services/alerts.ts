import { ApiError } from '@meterd/core/errors';
import { newId } from '@meterd/core/ids';
import { inTransaction, type Pool } from '@meterd/core/store';
import { METER_BY_KEY, meterNotFound } from './meters.js';

/**
 * Usage alerts of a workspace (docs/meters.md): a meter, a threshold and a period; the alert watch
 * (meters/alert-watch.ts) fires `meter.threshold.reached` once per period and threshold.
 */

/** Live alerts a workspace may have: each is one usage read per check. */
export const MAX_ALERTS_PER_WORKSPACE = 100;

export const THRESHOLD_KINDS = ['absolute', 'quota_percent'] as const;
export type ThresholdKind = (typeof THRESHOLD_KINDS)[number];
export const ALERT_PERIODS = ['day', 'month'] as const;
export type AlertPeriod = (typeof ALERT_PERIODS)[number];

export interface AlertInput {
  /** The meter's id or slug. */
  meter: string;
  threshold_kind: ThresholdKind;
  threshold: number;
  period: AlertPeriod;
  group_value?: Record<string, string> | null;
}

export interface AlertView {
  id: string;
  meter: { id: string; slug: string };
  threshold_kind: ThresholdKind;
  threshold: number;
  period: AlertPeriod;
  group_value: Record<string, string> | null;
  created_at: string;
  /** When it last fired (any period); null if never. */
  last_fired_at: string | null;
}

interface Row {
  id: string;
  meter_id: string;
  meter_slug: string;
  threshold_kind: ThresholdKind;
  threshold: string;
  period: AlertPeriod;
  group_value: Record<string, string> | null;
  created_at: Date;
  last_fired_at: Date | null;
}

const SELECT = `SELECT a.id, a.meter_id, m.slug AS meter_slug, a.threshold_kind, a.threshold::text AS threshold, a.period,
    a.group_value, a.created_at,
    (SELECT max(f.fired_at) FROM meter_alert_firings f WHERE f.alert_id = a.id) AS last_fired_at
  FROM meter_alerts a JOIN meters m ON m.id = a.meter_id
  WHERE a.workspace_id = $1 AND a.deleted_at IS NULL AND m.deleted_at IS NULL`;

function view(r: Row): AlertView {
  return {
    id: r.id,
    meter: { id: r.meter_id, slug: r.meter_slug },
    threshold_kind: r.threshold_kind,
    // The threshold came in as a JSON number, so it reads back as one without loss.
    threshold: Number(r.threshold),
    period: r.period,
    group_value: r.group_value,
    created_at: r.created_at.toISOString(),
    last_fired_at: r.last_fired_at === null ? null : r.last_fired_at.toISOString(),
  };
}

export class AlertService {
  constructor(private readonly pool: Pool) {}

  /**
   * Creates an alert on a live meter of the workspace. A quota_percent alert is monthly: the plan's
   * quota is per calendar month. group_value names only the meter's group_by keys.
   */
  async create(workspaceId: string, a: AlertInput): Promise<AlertView> {
    if (a.threshold_kind === 'quota_percent' && a.period !== 'month')
      throw new ApiError('invalid_field', "a quota_percent alert's period is month, the plan quota's period", 'period');
    return inTransaction(this.pool, async (c) => {
      await c.query('SELECT 1 FROM workspaces WHERE id = $1 FOR UPDATE', [workspaceId]);
      const { rows: meters } = await c.query<{ id: string; group_by: string[] }>(
        `SELECT id, group_by FROM meters ${METER_BY_KEY}`,
        [workspaceId, a.meter],
      );
      const meter = meters[0];
      if (meter === undefined) throw meterNotFound(a.meter, 'meter');
      for (const k of Object.keys(a.group_value ?? {}))
        if (!meter.group_by.includes(k))
          throw new ApiError(
            'invalid_field',
            `the meter groups by ${meter.group_by.length === 0 ? 'nothing' : meter.group_by.join(', ')}, not ${k}`,
            `group_value.${k}`,
          );
      const { rows: n } = await c.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM meter_alerts WHERE workspace_id = $1 AND deleted_at IS NULL',
        [workspaceId],
      );
      if (n[0]!.n >= MAX_ALERTS_PER_WORKSPACE)
        throw new ApiError(
          'alert_limit_exceeded',
          `a workspace may have ${MAX_ALERTS_PER_WORKSPACE} alerts; delete one before adding another`,
        );
      const id = newId('alr');
      await c.query(
        `INSERT INTO meter_alerts (id, workspace_id, meter_id, threshold_kind, threshold, period, group_value)
         VALUES ($1, $2, $3, $4, $5, $6, $7)`,
        [id, workspaceId, meter.id, a.threshold_kind, a.threshold, a.period, a.group_value ?? null],
      );
      const { rows } = await c.query<Row>(`${SELECT} AND a.id = $2`, [workspaceId, id]);
      return view(rows[0]!);
    });
  }

  /** The workspace's live alerts, optionally of one meter (by id or slug). */
  async list(workspaceId: string, meter?: string): Promise<AlertView[]> {
    const { rows } = await this.pool.query<Row>(
      `${SELECT} AND ($2::text IS NULL OR m.id = $2 OR m.slug = $2) ORDER BY a.created_at, a.id`,
      [workspaceId, meter ?? null],
    );
    return rows.map(view);
  }

  async get(workspaceId: string, alertId: string): Promise<AlertView> {
    const { rows } = await this.pool.query<Row>(`${SELECT} AND a.id = $2`, [workspaceId, alertId]);
    if (rows.length === 0) throw alertNotFound(alertId);
    return view(rows[0]!);
  }

  /** Soft-deletes an alert: it stops firing; its firings stay until the workspace is purged. */
  async remove(workspaceId: string, alertId: string): Promise<void> {
    const { rowCount } = await this.pool.query(
      'UPDATE meter_alerts SET deleted_at = now(), updated_at = now() WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL',
      [alertId, workspaceId],
    );
    if (rowCount === 0) throw alertNotFound(alertId);
  }
}

function alertNotFound(id: string): ApiError {
  return new ApiError('resource_not_found', `no alert ${id} in this workspace`);
}
