import { parseArgs } from 'node:util';
import { clickHouseFromConfig } from '@meterd/core/clickhouse';
import { loadConfig, storeVars, int } from '@meterd/core/config';
import { aggregatorVars } from './config.js';
import { parseRfc3339 } from '@meterd/core/event';
import { reconcile } from './reconcile/compare.js';

/**
 * `npm run reconcile -- --workspace ws_… --from 2026-04-01T00:00:00Z --to 2026-05-01T00:00:00Z`
 * or `--all` (every workspace; --from/--to optional). Recomputes the totals from the distinct raw
 * events, compares them with the rollups, prints each difference. Exit codes: 0 all equal,
 * 1 differences found, 2 bad arguments or configuration, 3 a store failed.
 */
const USAGE = 'usage: reconcile (--workspace ws_… | --all) [--from RFC3339] [--to RFC3339]';

function fail(msg: string, code: number): never {
  console.error(`reconcile: ${msg}`);
  process.exit(code);
}

let args: { workspace?: string; all?: boolean; from?: string; to?: string };
try {
  args = parseArgs({
    options: {
      workspace: { type: 'string' },
      all: { type: 'boolean' },
      from: { type: 'string' },
      to: { type: 'string' },
    },
    strict: true,
  }).values;
} catch (err) {
  fail(`${(err as Error).message}\n${USAGE}`, 2);
}
if ((args.workspace === undefined) === (args.all !== true))
  fail(`give exactly one of --workspace and --all\n${USAGE}`, 2);
if (args.workspace !== undefined && !/^ws_[A-Za-z0-9]{1,61}$/.test(args.workspace))
  fail('--workspace must be a workspace id like ws_…', 2);
if (args.workspace !== undefined && (args.from === undefined || args.to === undefined))
  fail(`--workspace needs --from and --to\n${USAGE}`, 2);
const from = args.from === undefined ? 0 : parseRfc3339(args.from);
const to = args.to === undefined ? Date.UTC(2100, 0, 1) : parseRfc3339(args.to);
if (Number.isNaN(from)) fail('--from must be an RFC 3339 date-time', 2);
if (Number.isNaN(to)) fail('--to must be an RFC 3339 date-time', 2);
if (from >= to) fail('--from must be before --to', 2);

let cfg;
try {
  cfg = loadConfig({
    ...storeVars,
    AGGREGATOR_CLOSE_AFTER_SECONDS: int(
      'An hour is closed for billing this long after it ends (must match the aggregator).',
      300,
      0,
      90 * 86_400,
    ),
    AGGREGATOR_COPY_HORIZON_SECONDS: aggregatorVars.AGGREGATOR_COPY_HORIZON_SECONDS,
  });
} catch (err) {
  fail((err as Error).message, 2);
}

const ch = clickHouseFromConfig(cfg);
try {
  const diffs = await reconcile(ch, {
    ...(args.workspace === undefined ? {} : { workspaceId: args.workspace }),
    from,
    to,
    closeAfterSeconds: cfg.AGGREGATOR_CLOSE_AFTER_SECONDS,
    copyHorizonSeconds: cfg.AGGREGATOR_COPY_HORIZON_SECONDS,
  });
  const scope = args.workspace ?? 'all workspaces';
  if (diffs.length === 0) {
    console.log(`reconcile: rollups match the distinct raw events (${scope})`);
  } else {
    for (const d of diffs)
      console.log(`${d.granularity}\t${d.key}\t${d.field}\texpected=${d.expected}\tactual=${d.actual}`);
    console.log(`reconcile: ${diffs.length} difference(s) (${scope})`);
  }
  await ch.close();
  process.exit(diffs.length === 0 ? 0 : 1);
} catch (err) {
  await ch.close().catch(() => {});
  fail((err as Error).message, 3);
}
