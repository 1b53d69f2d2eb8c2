import type { MeterUsageQuery, MeterUsageRow } from '@meterd/core/meters';

/**
 * The seam through which the control API reads a meter's rollups (the alert watch, the dashboard's
 * meter charts): core's `readMeterUsage` bound to a ClickHouse client in production; tests hand in
 * a reader whose values they control, so firing semantics are tested apart from the computation.
 */
export type MeterUsageReader = (q: MeterUsageQuery) => Promise<MeterUsageRow[]>;
