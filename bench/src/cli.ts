import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isMeterdError } from '@meterd/core/errors';
import { REPO_ROOT } from '@meterd/core/testing';
import { HELP, parseArgs, type BenchArgs } from './args.js';
import { buildRef, renderComparison } from './compare-ref.js';
import { metersMarkdown, runMetersComparison } from './meters-compare.js';
import { preloadMarkdown, runPreloadComparison } from './preload-compare.js';
import { runBench, type BenchReport } from './run.js';
import { renderMarkdown } from './report/markdown.js';
import { renderSvg } from './report/svg.js';
import { wrkAvailable } from './load/wrk.js';

/**
 * `npm run bench -- …`: runs the phases, writes <stamp>-<scenarios>.{json,md,svg} into the results
 * folder, prints the Markdown summary. Exit 1 when any verification failed (an event lost or
 * doubled), 2 on a usage or set-up error; targets missed are reported, not an exit status.
 */
async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const parsed = parseArgs(argv, process.env, join(REPO_ROOT, 'bench/results'), wrkAvailable());
  if (parsed === 'help') {
    process.stdout.write(HELP);
    return 0;
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
  const name = `${stamp}-${parsed.quick ? 'quick' : parsed.againstEmpty ? 'batch' : parsed.scenarios.join('-')}`;
  if (parsed.compareRef !== undefined) return compareWithRef(parsed, argv, name);
  if (parsed.againstEmpty) return preloadAgainstEmpty(parsed, argv, name);
  if (parsed.againstNoMeters) return metersAgainstNone(parsed, argv, name);
  const report = await runBench({
    args: parsed,
    command: `npm run bench -- ${argv.join(' ')}`.trim(),
    progress: process.stderr,
    profileDir: join(parsed.out, `${name}-profile`),
  });
  const files = writeReport(parsed.out, name, report);
  process.stdout.write(`\n${renderMarkdown(report)}\nwritten: ${files.join(', ')}\n`);
  return report.correct ? 0 : 1;
}

/** --compare-ref: this checkout and the ref, alternately, twice each; then the ratio of medians. */
async function compareWithRef(parsed: BenchArgs, argv: string[], name: string): Promise<number> {
  const ref = parsed.compareRef!;
  const { sha, ingestMain } = buildRef(ref, (s) => process.stderr.write(`${s}\n`));
  const mine: BenchReport[] = [];
  const theirs: BenchReport[] = [];
  for (let round = 0; round < 2; round++) {
    for (const [side, list, main] of [
      ['this', mine, undefined],
      [ref, theirs, ingestMain],
    ] as const) {
      process.stderr.write(`bench: round ${round + 1}, ${side}\n`);
      list.push(
        await runBench({
          args: { ...parsed, ingestMain: main ?? parsed.ingestMain },
          command: `npm run bench -- ${argv.join(' ')}`.trim(),
          progress: process.stderr,
          profileDir: join(parsed.out, `${name}-profile`),
        }),
      );
    }
  }
  mine.forEach((r, i) => writeReport(parsed.out, `${name}-this-${i + 1}`, r));
  theirs.forEach((r, i) => writeReport(parsed.out, `${name}-ref-${i + 1}`, r));
  const table = renderComparison(ref, sha, mine, theirs);
  writeFileSync(join(parsed.out, `${name}-compare.md`), table);
  process.stdout.write(`\n${table}\nwritten: ${join(parsed.out, `${name}-compare.md`)} and each run's report\n`);
  return [...mine, ...theirs].every((r) => r.correct) ? 0 : 1;
}

/** --preload N --against-empty: both stores in one run; writes <name>-preload.{json,md}. */
async function preloadAgainstEmpty(parsed: BenchArgs, argv: string[], name: string): Promise<number> {
  const c = await runPreloadComparison(
    parsed,
    `npm run bench -- ${argv.join(' ')}`.trim(),
    join(parsed.out, `${name}-profile`),
    (s) => process.stderr.write(`${s}\n`),
  );
  mkdirSync(parsed.out, { recursive: true });
  const md = preloadMarkdown(c);
  writeFileSync(join(parsed.out, `${name}-preload.json`), JSON.stringify(c, null, 2));
  writeFileSync(join(parsed.out, `${name}-preload.md`), md);
  process.stdout.write(`\n${md}\nwritten: ${join(parsed.out, `${name}-preload.{json,md}`)}\n`);
  return c.correct ? 0 : 1;
}

/** --meters N --against-no-meters: both sides in one run; writes <name>-meters.{json,md}. */
async function metersAgainstNone(parsed: BenchArgs, argv: string[], name: string): Promise<number> {
  const c = await runMetersComparison(
    parsed,
    `npm run bench -- ${argv.join(' ')}`.trim(),
    join(parsed.out, `${name}-profile`),
    (s) => process.stderr.write(`${s}\n`),
  );
  mkdirSync(parsed.out, { recursive: true });
  const md = metersMarkdown(c);
  writeFileSync(join(parsed.out, `${name}-meters.json`), JSON.stringify(c, null, 2));
  writeFileSync(join(parsed.out, `${name}-meters.md`), md);
  process.stdout.write(`\n${md}\nwritten: ${join(parsed.out, `${name}-meters.{json,md}`)}\n`);
  return c.correct ? 0 : 1;
}

export function writeReport(dir: string, name: string, report: BenchReport): string[] {
  mkdirSync(dir, { recursive: true });
  const json = join(dir, `${name}.json`);
  const md = join(dir, `${name}.md`);
  const svg = join(dir, `${name}.svg`);
  writeFileSync(json, JSON.stringify(report, null, 2));
  writeFileSync(md, renderMarkdown(report));
  const runs = report.phases.flatMap((p) => {
    const unit = p.scenario === 'single' || p.scenario === 'quota' ? ('requests' as const) : ('events' as const);
    return [
      { name: `meterd — ${p.scenario}`, summary: p.meterd, perSecond: unit },
      ...(p.ceiling ? [{ name: `bare uWS ceiling — ${p.scenario}`, summary: p.ceiling, perSecond: unit }] : []),
      ...(p.baseline ? [{ name: `Fastify baseline — ${p.scenario}`, summary: p.baseline, perSecond: unit }] : []),
    ];
  });
  writeFileSync(svg, renderSvg(`meterd benchmark ${report.startedAt}`, runs));
  return [json, md, svg];
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(
      `\nbench: ${isMeterdError(err) ? `${err.message} [${err.code}]` : ((err as Error)?.stack ?? String(err))}\n`,
    );
    process.exit(2);
  },
);
