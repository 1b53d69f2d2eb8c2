import type { IncomingHttpHeaders } from 'node:http';
import type { ClickHouseClient } from '@clickhouse/client';
import { bucketOfKey, hasScope, type Authenticator, type Principal } from '@meterd/core/auth';
import { ApiError } from '@meterd/core/errors';
import { readRollups } from '../rollups/read.js';
import { workspaceFreshness } from '../rollups/freshness.js';
import { parseUsageQuery } from './usage-query.js';
import { usageCsv, usageJson } from './usage-render.js';

export interface UsageRouteDeps {
  ch: ClickHouseClient;
  auth: Authenticator;
  shards: number;
  freshnessTargetMs: number;
}

/**
 * GET /api/v1/workspaces/:id/usage: authenticate (meter:read or the operator key), check the
 * workspace, parse the parameters, read the current rollup rows and the shard's freshness, answer
 * as JSON or CSV. Throws ApiError for every refusal; the server turns it into the error body.
 */
export async function handleUsage(
  deps: UsageRouteDeps,
  reqHeaders: IncomingHttpHeaders,
  pathId: string,
  params: URLSearchParams,
): Promise<{ headers: Record<string, string>; body: string }> {
  const { principal: p, bucket: workspaceId } = await authorizeUsageRead(deps.auth, reqHeaders, pathId);
  const now = Date.now();
  const q = parseUsageQuery(workspaceId, params, String(reqHeaders.accept ?? ''), now);
  if (q instanceof ApiError) throw q;
  await assertWorkspaceExists(deps.auth, p, workspaceId);
  const [rows, freshness] = await Promise.all([
    readRollups(deps.ch, q.granularity, {
      workspaceId,
      from: q.from,
      to: q.to,
      ...(q.eventType === undefined ? {} : { eventType: q.eventType }),
    }),
    workspaceFreshness(deps.ch, workspaceId, deps.shards, now),
  ]);
  const headers: Record<string, string> = {
    'cache-control': 'no-store',
    'x-meterd-freshness-target-ms': String(deps.freshnessTargetMs),
  };
  if (freshness.asOfMs !== null) {
    headers['x-meterd-rollups-as-of'] = new Date(freshness.asOfMs).toISOString();
    headers['x-meterd-freshness-lag-ms'] = String(freshness.lagMs);
  }
  if (q.format === 'csv') {
    return {
      headers: {
        'content-type': 'text/csv; charset=utf-8',
        'content-disposition': `attachment; filename="usage-${workspaceId}-${q.granularity}.csv"`,
        ...headers,
      },
      body: usageCsv(q, rows),
    };
  }
  return {
    headers: { 'content-type': 'application/json; charset=utf-8', ...headers },
    body: usageJson(q, rows, freshness, deps.freshnessTargetMs),
  };
}

/**
 * Who may read a workspace's usage (this API and the meters' usage API): a key with meter:read for
 * that workspace, or the operator key. The environment comes from the key: a test key reads its
 * test bucket whether the path names the bucket or its live workspace (docs/api.md §13).
 */
export async function authorizeUsageRead(
  auth: Authenticator,
  reqHeaders: IncomingHttpHeaders,
  pathId: string,
): Promise<{ principal: Principal; bucket: string }> {
  const p = await auth.authenticate(reqHeaders.authorization ?? '');
  if (p instanceof ApiError) throw p;
  if (!hasScope(p, 'meter:read')) throw new ApiError('insufficient_scope', 'this key lacks the meter:read scope');
  const bucket = p.workspaceId === null ? pathId : bucketOfKey(p, pathId);
  if (bucket === undefined) {
    throw new ApiError('workspace_mismatch', "a key can read only its own workspace's usage", 'workspace_id');
  }
  return { principal: p, bucket };
}

/** The operator key may name any workspace: one that does not exist is a 404, not an empty answer. */
export async function assertWorkspaceExists(auth: Authenticator, p: Principal, bucket: string): Promise<void> {
  if (p.workspaceId === null && (await auth.planOf(bucket)) === undefined) {
    throw new ApiError('workspace_not_found', `no workspace ${bucket}`, 'workspace_id');
  }
}
