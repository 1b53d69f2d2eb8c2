import type { LoadSummary } from '../load/run-load.js';
import type { BenchReport, PhaseReport } from '../run.js';
import { soakMarkdown } from '../soak.js';
import { stageMarkdown } from '../stages/table.js';
import type { Verification } from '../verify/clickhouse.js';
import type { MeterVerification } from '../verify/meters.js';
import { GENERATOR_BOUND_PCT, generatorBound, isGeneratorBound, type TargetCheck } from '../targets.js';

const n = (v: number | undefined, d = 0) =>
  v === undefined ? 'n/a' : v.toLocaleString('en-US', { maximumFractionDigits: d });

/** The human summary of a run: what ran, the figures, the ratios, the verification, the targets. */
export function renderMarkdown(r: BenchReport): string {
  let md = `# meterd benchmark — ${r.phases.map((p) => p.scenario).join(', ')}\n\n`;
  md += `- command: \`${r.command}\`\n- started: ${r.startedAt}\n`;
  md += `- target: ${r.mode === 'self-started' ? `self-started ingest (${r.ingestThreads} threads) with its own Postgres and ClickHouse databases` : r.target}\n`;
  md += `- machine: ${r.machine.cores} cores, load average ${r.machine.loadavg1mAtStart} at start, Node ${r.machine.node}; load generator on the same machine (${r.generator ?? 'autocannon'})\n`;
  md += `- aggregator: ${r.aggregator.note}\n`;
  md += `- correctness: **${r.correct ? 'PASS' : 'FAIL'}** (nothing lost, nothing doubled, nothing stored against a refusal)\n\n`;
  for (const p of r.phases) md += phase(p);
  if (r.stages) {
    md += stageMarkdown(r.stages.table);
    md +=
      '| generator on bare uWS | req/s | generator CPU % (of capacity) | req per generator CPU-s |\n|---|---:|---:|---:|\n';
    for (const g of r.stages.generators)
      md += `| ${g.generator.tool} | ${n(g.requestsPerSec)} | ${generatorCell(g)} | ${n(g.generator.requestsPerCpuSec)} |\n`;
    md += '\n';
  }
  if (r.profile) {
    md += `## Where ingest's CPU time goes (--cpu-prof, ${r.profile.files.length} thread profiles, ${n(r.profile.totalMs)} ms sampled, ${r.profile.idlePct} % idle)\n\n`;
    md += '| self % of busy | self ms | function | where |\n|---:|---:|---|---|\n';
    for (const f of r.profile.top) md += `| ${f.selfPct} | ${n(f.selfMs)} | \`${f.fn}\` | ${f.where} |\n`;
    md += '\n';
  }
  return md;
}

function phase(p: PhaseReport): string {
  let md = `## ${p.scenario}: ${p.describe}\n\n`;
  md +=
    '| server | connections | req/s | events/s | p50 ms | p90 ms | p99 ms | max ms | non-2xx | errors | server CPU % | server RSS MB | generator CPU % (of capacity) | req per generator CPU-s | Redis CPU % | ClickHouse CPU % | other CPU % |\n';
  md += '|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|\n';
  md += row('meterd ingest', p.meterd);
  if (p.ceiling) md += row('bare uWS (ceiling)', p.ceiling);
  if (p.baseline) md += row('Fastify baseline', p.baseline);
  md += `\nmeterd's answers: ${n(p.answers.stored)} events stored, ${n(p.answers.duplicate)} answered as duplicates, ${n(p.answers.rejected)} refused.\n\n`;
  if (p.serverMetrics) {
    const m = p.serverMetrics;
    md +=
      `Inside ingest (its /metrics over the load): ${n(m.groupCommits)} group commits carrying ${n(m.eventsPerCommit, 1)} events each, ` +
      `commit (write + fdatasync) mean ${n(m.commitMeanMs, 2)} ms, p99 ≤ ${n(m.commitP99Ms, 2)} ms; ${n(m.redisRoundTrips)} Redis round trips, ` +
      `${n(m.eventsPerRedisRoundTrip, 1)} events each; ${n(m.clickhouseInserts)} ClickHouse inserts of ${n(m.rowsPerInsert)} rows, mean ${n(m.insertMeanMs, 1)} ms.\n\n`;
  }
  if (p.redisSetNx)
    md += `Redis's own rate: **${n(p.redisSetNx.opsPerSec)} SET NX/s** (${p.redisSetNx.tool}; measures ${p.redisSetNx.what}).\n\n`;
  const ratios: string[] = [];
  if (p.ratios.vsCeiling !== undefined) ratios.push(`meterd ÷ bare uWS = **${p.ratios.vsCeiling}**`);
  if (p.ratios.vsBaseline !== undefined) ratios.push(`meterd ÷ baseline = **${p.ratios.vsBaseline}**`);
  if (p.ratios.vsRedisSetNx !== undefined)
    ratios.push(`meterd events/s ÷ Redis SET NX/s = **${p.ratios.vsRedisSetNx}**`);
  if (ratios.length > 0)
    md += `Ratios (${p.scenario === 'single' ? 'requests' : 'events'}/s, same run): ${ratios.join('; ')}.\n\n`;
  const bound = generatorBound(p);
  if (bound.length > 0)
    md += `**Generator-bound:** the load generator was at ≥ ${GENERATOR_BOUND_PCT} % of the CPU it could use (min(its threads, cores) × 100 %) in ${bound.join(', ')}. Those runs measure the generator, not the server: ratios against them are not the server's and their targets are not judged.\n\n`;
  if (p.verification) md += verification('meterd, load events', p.verification, p.spoolDrainMs);
  if (p.probeVerification) md += verification('meterd, freshness probes', p.probeVerification);
  if (p.meterVerification) md += meterVerification(p.meterVerification);
  if (p.baselineVerification) md += verification('baseline', p.baselineVerification);
  if (p.freshness) {
    const f = p.freshness;
    md += `Freshness (sent → visible in \`${f.table}\`, ±${f.resolutionMs} ms): p50 **${n(f.p50Ms)} ms**, p99 **${n(f.p99Ms)} ms**, max ${n(f.maxMs)} ms over ${f.probesSeen} of ${f.probesAcknowledged} acknowledged probes.\n\n`;
    if (f.rollup) {
      md += `Freshness (sent → counted in \`${f.rollup.table}\` FINAL by the aggregator): p50 **${n(f.rollup.p50Ms)} ms**, p99 **${n(f.rollup.p99Ms)} ms**, max ${n(f.rollup.maxMs)} ms over ${f.rollup.probesCounted} of ${f.probesAcknowledged} probes.\n\n`;
    }
    if (p.aggregatorCycles)
      md += `Aggregator cycles during the load (its /metrics histogram): ${n(p.aggregatorCycles.count)}, median ${n(p.aggregatorCycles.medianMs)} ms, p99 ${n(p.aggregatorCycles.p99Ms)} ms.\n\n`;
  }
  if (p.soak) md += `${soakMarkdown(p.soak)}\n`;
  if (p.quota)
    md += `Quota: ${n(p.quota.acknowledged)} events acknowledged for a free-plan workspace with a limit of ${p.quota.limit}: **${p.quota.ok ? 'PASS' : 'FAIL'}**.\n\n`;
  return md + targetsTable(p.targets) + '\n';
}

/** The targets of a run as a table: ✅, ❌, or – where not judged (not measured, generator-bound). */
export function targetsTable(targets: readonly TargetCheck[]): string {
  let md = '| target | goal | measured | |\n|---|---|---|---|\n';
  for (const t of targets)
    md += `| ${t.name} | ${t.target} | ${t.measured} | ${t.pass === undefined ? '–' : t.pass ? '✅' : '❌'} |\n`;
  return md;
}

function meterVerification(v: MeterVerification): string {
  const bad = v.meters.filter((m) => !m.ok);
  let md = `Verification (meters, \`meter_hourly\` through readMeterUsage against \`events\`): **${v.ok ? 'PASS' : 'FAIL'}** — ${v.meters.length - bad.length} of ${v.meters.length} meters exact (${v.meters.map((m) => `${m.slug} ${m.rows} rows`).join(', ')}), ${v.ok ? 'all matching' : 'still differing'} ${n(v.waitedMs)} ms after the check began`;
  for (const m of bad)
    md += `; ${m.slug}: rollup \`${m.firstDifference?.rollup ?? '(none)'}\` vs events \`${m.firstDifference?.events ?? '(none)'}\``;
  return `${md}.\n\n`;
}

function row(name: string, s: LoadSummary): string {
  const non2xx =
    Object.entries(s.statusCounts)
      .filter(([c]) => !c.startsWith('2'))
      .map(([c, k]) => `${c}: ${n(k)}`)
      .join(', ') || '0';
  return `| ${name} | ${s.connections} | ${n(s.requestsPerSec)} | ${n(s.eventsPerSec)} | ${s.latencyMs.p50} | ${s.latencyMs.p90} | ${s.latencyMs.p99} | ${s.latencyMs.max} | ${non2xx} | ${s.errors + s.timeouts} | ${n(s.server.cpuPctAvg)} | ${n(s.server.rssMbMax)} | ${generatorCell(s)} | ${n(s.generator?.requestsPerCpuSec)} | ${s.redisCpuPctAvg} | ${s.clickhouseCpuPctAvg} | ${otherCell(s)} |\n`;
}

function generatorCell(s: LoadSummary): string {
  const g = s.generator;
  if (g === undefined) return `${s.generatorCpuPctAvg}`;
  return `${g.tool} ${g.cpuPctAvg} (of ${g.capacityPct})${isGeneratorBound(s) ? ' ⚠' : ''}`;
}

function otherCell(s: LoadSummary): string {
  const o = Object.entries(s.otherCpuPctAvg ?? {});
  return o.length === 0 ? '–' : o.map(([name, pct]) => `${name} ${pct}`).join(', ');
}

function verification(what: string, v: Verification, drainMs?: number): string {
  return (
    `Verification (${what}, table \`${v.table}\`): **${v.ok ? 'PASS' : 'FAIL'}** — ${n(v.acknowledged)} acknowledged, ${n(v.distinctInTable)} distinct in ClickHouse ` +
    `(count() FINAL ${n(v.rowsFinal)}, raw rows ${n(v.rawRows)}); lost ${v.lost}, doubled ${v.doubled}, stored though refused ${v.stray}; ` +
    `${v.unansweredSent} sent without an answer, ${v.unansweredStored} of them stored` +
    `${v.replayCopies > 0 ? `; ${v.replayCopies} replayed copies collapsed by ReplacingMergeTree` : ''}` +
    `${drainMs !== undefined ? `; spool drained ${drainMs} ms after the load stopped` : ''}${v.note ? ` — ${v.note}` : ''}.\n\n`
  );
}
