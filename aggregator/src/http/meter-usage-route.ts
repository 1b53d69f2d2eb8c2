import type { IncomingHttpHeaders } from 'node:http';
import type { ClickHouseClient } from '@clickhouse/client';
import type { Authenticator } from '@meterd/core/auth';
import { ApiError } from '@meterd/core/errors';
import { formatRfc3339 } from '@meterd/core/event';
import { meterBySlug, readMeterUsage, type MeterDefinition, type MeterUsageRow } from '@meterd/core/meters';
import { currencyExponent } from '@meterd/core/money';
import type { Pool } from '@meterd/core/store';
import { parseMeterUsageQuery, type MeterUsageParams } from './meter-usage-query.js';
import { csvField } from './usage-render.js';
import { assertWorkspaceExists, authorizeUsageRead } from './usage-route.js';

export interface MeterUsageRouteDeps {
  ch: ClickHouseClient;
  auth: Authenticator;
  pool: Pool;
}

/**
 * GET /api/v1/workspaces/:id/meters/:slug/usage (docs/meters.md): the same authorisation as the
 * usage API, the meter by slug (404 `resource_not_found` naming `slug`), core's readMeterUsage,
 * JSON or CSV. Values are exact decimal integers (JSON numbers written from the decimal text).
 */
export async function handleMeterUsage(
  deps: MeterUsageRouteDeps,
  reqHeaders: IncomingHttpHeaders,
  pathId: string,
  slug: string,
  params: URLSearchParams,
): Promise<{ headers: Record<string, string>; body: string }> {
  const { principal, bucket } = await authorizeUsageRead(deps.auth, reqHeaders, pathId);
  const q = parseMeterUsageQuery(slug, params, String(reqHeaders.accept ?? ''), Date.now());
  if (q instanceof ApiError) throw q;
  await assertWorkspaceExists(deps.auth, principal, bucket);
  const meter = await meterBySlug(deps.pool, bucket, slug);
  if (meter === undefined) throw new ApiError('resource_not_found', `no meter ${slug} in this workspace`, 'slug');
  const rows = await readMeterUsage(deps.ch, {
    meter,
    bucketId: bucket,
    fromMs: q.fromMs,
    toMs: q.toMs,
    window: q.window,
    tz: q.tz,
    groupBy: q.groupBy,
    filter: q.filter,
    closedOnly: false,
  });
  if (q.format === 'csv') {
    return {
      headers: {
        'content-type': 'text/csv; charset=utf-8',
        'content-disposition': `attachment; filename="meter-${slug}-${q.window}.csv"`,
        'cache-control': 'no-store',
      },
      body: meterUsageCsv(meter, q, rows),
    };
  }
  return {
    headers: { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' },
    body: meterUsageJson(meter, bucket, q, rows),
  };
}

function meterUsageJson(
  m: MeterDefinition,
  bucket: string,
  q: MeterUsageParams,
  rows: readonly MeterUsageRow[],
): string {
  const data = rows.map((r) => {
    const cur =
      r.currency === undefined
        ? ''
        : `,"currency":${JSON.stringify(r.currency)},"currency_exponent":${currencyExponent(r.currency)}`;
    return `{"window_start":"${formatRfc3339(r.startMs)}","window_end":"${formatRfc3339(r.endMs)}","group":${JSON.stringify(r.group)}${cur},"value":${r.value}}`;
  });
  const head = {
    object: 'meter_usage',
    workspace_id: bucket,
    meter: {
      id: m.id,
      slug: m.slug,
      aggregation: m.aggregation,
      value_field: m.value_field,
      event_types: m.event_types,
    },
    window: q.window,
    tz: q.tz,
    from: formatRfc3339(q.fromMs),
    to: formatRfc3339(q.toMs),
    group_by: q.groupBy,
    filter: q.filter,
  };
  return `${JSON.stringify(head).slice(0, -1)},"data":[${data.join(',')}]}`;
}

function meterUsageCsv(m: MeterDefinition, q: MeterUsageParams, rows: readonly MeterUsageRow[]): string {
  const gmv = m.value_field === 'gmv_cents';
  const header = [
    'window_start',
    'window_end',
    ...q.groupBy.map(csvField),
    ...(gmv ? ['currency', 'currency_exponent'] : []),
    'value',
  ];
  let out = header.join(',') + '\r\n';
  for (const r of rows) {
    const cells = [
      formatRfc3339(r.startMs),
      formatRfc3339(r.endMs),
      ...q.groupBy.map((k) => csvField(r.group[k] ?? '')),
    ];
    if (gmv) cells.push(csvField(r.currency ?? ''), String(currencyExponent(r.currency ?? '')));
    cells.push(r.value);
    out += cells.join(',') + '\r\n';
  }
  return out;
}
