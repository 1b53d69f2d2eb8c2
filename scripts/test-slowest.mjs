// A node:test reporter (scripts/test.sh sends it to stderr): at the end of the run, the ten test
// files that took longest (node reports each file as a test of its own, named by its path, with the
// time its process ran), so a file creeping towards its time limit is seen before it reaches it.
export default async function* slowest(source) {
  const files = [];
  for await (const event of source) {
    const d = event.data;
    if (event.type === 'test:complete' && d.file !== undefined && d.name === d.file) {
      files.push({ file: d.file.replace(process.cwd() + '/', ''), s: (d.details?.duration_ms ?? 0) / 1000 });
    }
  }
  files.sort((a, b) => b.s - a.s);
  yield '\nslowest test files:\n';
  for (const r of files.slice(0, 10)) yield `  ${r.s.toFixed(1).padStart(7)} s  ${r.file}\n`;
}
