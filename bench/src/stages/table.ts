import type { LoadSummary } from '../load/sampler.js';

/** One stage of the hot path measured alone. */
export interface StageCeiling {
  stage: string;
  /** What was measured and how (tool, shape, threads). */
  how: string;
  /** The rate measured. */
  eventsPerSec: number;
  /**
   * CPU of the process doing the stage's work while measured (percent of one core), and the most it
   * could use (its threads, capped by the cores). On a shared machine a stage rarely gets all of
   * it: its ceiling is then the measured rate scaled to full use. Absent for a stage bound by
   * something else than CPU (the spool waits on the disk).
   */
  cpu?: { process: string; pct: number; capacityPct: number };
}

/** The rate a stage would reach using all the CPU it could (its measured rate when not CPU-bound). */
export function ceilingOf(s: StageCeiling): number {
  if (s.cpu === undefined || s.cpu.pct <= 0) return s.eventsPerSec;
  return Math.round((s.eventsPerSec * s.cpu.capacityPct) / Math.min(s.cpu.pct, s.cpu.capacityPct));
}

/** The CPU one event cost each process in the full pipeline run. */
export interface ProcessCost {
  process: string;
  /** As sampled during the run, and less the process's background (the cost counted). */
  rawCpuPct: number;
  cpuPct: number;
  usPerEvent: number;
}

export interface StageTable {
  scenario: string;
  /** The full pipeline's rate in this run (events/s). */
  pipelineEventsPerSec: number;
  target: number;
  rows: (StageCeiling & { ceiling: number; pipelineShare: number; binding: boolean; belowTarget: boolean })[];
  /** Every server-side process's CPU per event, and what the machine's cores give at that cost. */
  costs: ProcessCost[];
  serverUsPerEvent: number;
  /** cores × 1 s ÷ the server side's CPU per event: the rate if the server side had every core. */
  cpuCeiling: number;
  /** The same with the load generator's CPU per event on the same cores (as in this run). */
  cpuCeilingWithGenerator: number;
  binding: string;
  reachable: boolean;
}

/** Processes whose CPU counts as the server side's (the generator is listed on its own). */
const SERVER_SIDE = ['ingest', 'redis', 'clickhouse', 'aggregator'];

/**
 * Each process's CPU per event in a pipeline run (0 events: no costs). `background`: CPU a shared
 * server (Redis, ClickHouse) used with no load of this run, measured just before; subtracted, as
 * other users' work is not the run's cost.
 */
export function processCosts(m: LoadSummary, background: Record<string, number> = {}): ProcessCost[] {
  const events = m.eventsPerSec ?? 0;
  if (events <= 0) return [];
  const pcts: [string, number][] = [
    ['ingest', m.server.cpuPctAvg ?? 0],
    ['redis', m.redisCpuPctAvg],
    ['clickhouse', m.clickhouseCpuPctAvg],
    ...Object.entries(m.otherCpuPctAvg ?? {}),
    ['generator', m.generatorCpuPctAvg],
  ];
  return pcts.map(([process, pct]) => {
    const cpuPct = Math.max(0, pct - (background[process] ?? 0));
    return { process, rawCpuPct: pct, cpuPct, usPerEvent: Math.round(((cpuPct / 100) * 1e6 * 10) / events) / 10 };
  });
}

/**
 * Which stage binds: the lowest ceiling among the stages measured alone and the CPU ceiling (the
 * server side's CPU per event in the pipeline run, spread over the machine's cores). A target above
 * that binding figure cannot be reached on this machine by tuning any other stage.
 */
export function stageTable(
  scenario: string,
  pipeline: LoadSummary,
  stages: readonly StageCeiling[],
  target: number,
  cores: number,
  background: Record<string, number> = {},
): StageTable {
  const costs = processCosts(pipeline, background);
  const sum = (names: (p: string) => boolean) =>
    costs.filter((c) => names(c.process)).reduce((a, c) => a + c.usPerEvent, 0);
  const serverUs = sum((p) => SERVER_SIDE.includes(p));
  const allUs = serverUs + sum((p) => p === 'generator');
  const ceiling = (us: number) => (us > 0 ? Math.round((cores * 1e6) / us) : Infinity);
  const all: StageCeiling[] = [
    ...stages,
    {
      stage: `CPU: ${cores} cores ÷ server-side CPU per event`,
      how: `the pipeline run's ${costs
        .filter((c) => SERVER_SIDE.includes(c.process))
        .map((c) => `${c.process} ${c.usPerEvent} µs`)
        .join(' + ')} = ${Math.round(serverUs * 10) / 10} µs per event`,
      eventsPerSec: ceiling(serverUs),
    },
  ];
  const lowest = all.reduce((a, s) => (ceilingOf(s) < ceilingOf(a) ? s : a), all[0]!);
  const pipelineEventsPerSec = pipeline.eventsPerSec ?? 0;
  return {
    scenario,
    pipelineEventsPerSec,
    target,
    rows: all.map((s) => {
      const c = ceilingOf(s);
      return {
        ...s,
        ceiling: c,
        pipelineShare: c > 0 ? Math.round((pipelineEventsPerSec / c) * 100) / 100 : 0,
        binding: s === lowest,
        belowTarget: c < target,
      };
    }),
    costs,
    serverUsPerEvent: Math.round(serverUs * 10) / 10,
    cpuCeiling: ceiling(serverUs),
    cpuCeilingWithGenerator: ceiling(allUs),
    binding: lowest.stage,
    reachable: ceilingOf(lowest) >= target,
  };
}

const n = (v: number) => (Number.isFinite(v) ? v.toLocaleString('en-US', { maximumFractionDigits: 1 }) : '∞');

export function stageMarkdown(t: StageTable): string {
  let md = `### Stage ceilings (${t.scenario}), each measured alone in this run\n\n`;
  md +=
    '| stage | measured events/s | CPU while measured | ceiling events/s (at full CPU) | pipeline ÷ ceiling | | how |\n|---|---:|---|---:|---:|---|---|\n';
  for (const r of t.rows) {
    const cpu = r.cpu ? `${r.cpu.process} ${r.cpu.pct} % of ${r.cpu.capacityPct} %` : '–';
    md += `| ${r.stage} | ${n(r.eventsPerSec)} | ${cpu} | ${n(r.ceiling)} | ${r.pipelineShare} | ${r.binding ? '**binds**' : ''}${r.belowTarget ? ' below target' : ''} | ${r.how} |\n`;
  }
  md += `| full pipeline (this run) | ${n(t.pipelineEventsPerSec)} | | | 1 | | meterd, same generator |\n\n`;
  md += '| process | CPU % in the pipeline run | less its background | µs CPU per event |\n|---|---:|---:|---:|\n';
  for (const c of t.costs) md += `| ${c.process} | ${c.rawCpuPct} | ${c.cpuPct} | ${n(c.usPerEvent)} |\n`;
  md +=
    `\nServer side: ${n(t.serverUsPerEvent)} µs of CPU per event → at most ${n(t.cpuCeiling)} events/s on this machine's cores ` +
    `(${n(t.cpuCeilingWithGenerator)} with the generator on the same cores, as here). ` +
    `Binding stage: **${t.binding}**; target ${n(t.target)} events/s ${t.reachable ? 'is within' : '**is above**'} its ceiling.\n\n`;
  return md;
}
