/**
 * A tiny timing harness for hot helpers: warm up, then run batches of calls for about a second and
 * report the median batch, so one GC pause or a neighbour's compile does not set the figure.
 */
export interface MicroResult {
  name: string;
  nsPerOp: number;
  opsPerSec: number;
}

let sink: unknown;
export function keep(v: unknown): void {
  sink = v;
}

/** `perCall`: items one call handles (a batch), so the figure is per item. */
export function measure(name: string, fn: (i: number) => unknown, ms = 1_000, perCall = 1): MicroResult {
  const batch = 2_000;
  const warmUntil = performance.now() + 200;
  let i = 0;
  while (performance.now() < warmUntil) for (let k = 0; k < batch; k++) keep(fn(i++));
  const perBatch: number[] = [];
  const until = performance.now() + ms;
  while (performance.now() < until) {
    const t = performance.now();
    for (let k = 0; k < batch; k++) keep(fn(i++));
    perBatch.push((performance.now() - t) / batch);
  }
  perBatch.sort((a, b) => a - b);
  const msPerOp = perBatch[Math.floor(perBatch.length / 2)]! / perCall;
  void sink;
  return { name, nsPerOp: Math.round(msPerOp * 1e6), opsPerSec: Math.round(1000 / msPerOp) };
}

export function print(results: MicroResult[]): void {
  const w = Math.max(...results.map((r) => r.name.length));
  for (const r of results) {
    process.stdout.write(
      `${r.name.padEnd(w)}  ${String(r.nsPerOp).padStart(8)} ns/op  ${r.opsPerSec.toLocaleString('en-US').padStart(13)} ops/s\n`,
    );
  }
}

export const isMain = (url: string): boolean =>
  process.argv[1] !== undefined && url === new URL(`file://${process.argv[1]}`).href;
