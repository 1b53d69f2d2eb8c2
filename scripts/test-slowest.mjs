// A node:test reporter (scripts/test.sh sends it to stderr): at the end of the run, the ten test
// files that took longest, from their first test's start to their last test's end, so a file
// creeping towards its time limit is seen before it reaches it.
export default async function* slowest(source) {
  const files = new Map();
  for await (const event of source) {
    const file = event.data?.file;
    if (file === undefined) continue;
    const now = Date.now();
    const f = files.get(file) ?? { first: now, last: now };
    if (event.type === 'test:start') f.first = Math.min(f.first, now);
    if (event.type === 'test:pass' || event.type === 'test:fail') f.last = now;
    files.set(file, f);
  }
  const rows = [...files].map(([file, f]) => ({
    file: file.replace(process.cwd() + '/', ''),
    s: (f.last - f.first) / 1000,
  }));
  rows.sort((a, b) => b.s - a.s);
  yield '\nslowest test files:\n';
  for (const r of rows.slice(0, 10)) yield `  ${r.s.toFixed(1).padStart(7)} s  ${r.file}\n`;
}
