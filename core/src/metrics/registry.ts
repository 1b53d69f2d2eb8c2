/**
 * A small Prometheus registry whose cells live in a SharedArrayBuffer with one slot per thread.
 * Each thread writes only its own slot (plain stores, no Atomics: one writer per cell), and
 * whichever thread serves /metrics sums every slot. That matters for ingest: its threads share one
 * port through SO_REUSEPORT, so a scrape lands on an arbitrary thread and must still see them all.
 * Every thread must define the same metrics in the same order (one shared define function), which
 * gives each cell the same index everywhere.
 */
const CAPACITY = 2048;

type Kind = 'counter' | 'gauge' | 'histogram';
interface Family {
  name: string;
  help: string;
  kind: Kind;
  series: Series[];
}
interface Series {
  labels: string;
  cell: number;
  buckets?: readonly number[];
}

export class MetricsRegistry {
  readonly buffer: SharedArrayBuffer;
  private readonly cells: Float64Array;
  private readonly base: number;
  private readonly families = new Map<string, Family>();
  private next = 0;

  /** `slots` threads share `buffer`; this thread writes slot `slot`. Omit buffer to create one. */
  constructor(
    readonly slots = 1,
    slot = 0,
    buffer?: SharedArrayBuffer,
  ) {
    this.buffer = buffer ?? new SharedArrayBuffer(CAPACITY * slots * 8);
    this.cells = new Float64Array(this.buffer);
    this.base = slot * CAPACITY;
  }

  counter(name: string, help: string, labels?: Record<string, string>): Counter {
    const cell = this.alloc(name, help, 'counter', labels, 1);
    return new Counter(this.cells, this.base + cell);
  }

  gauge(name: string, help: string, labels?: Record<string, string>): Gauge {
    const cell = this.alloc(name, help, 'gauge', labels, 1);
    return new Gauge(this.cells, this.base + cell);
  }

  /** Cells: one per bucket, then +Inf, then sum. */
  histogram(name: string, help: string, buckets: readonly number[], labels?: Record<string, string>): Histogram {
    const cell = this.alloc(name, help, 'histogram', labels, buckets.length + 2, buckets);
    return new Histogram(this.cells, this.base + cell, buckets);
  }

  render(): string {
    let out = '';
    for (const f of this.families.values()) {
      out += `# HELP ${f.name} ${f.help}\n# TYPE ${f.name} ${f.kind}\n`;
      for (const s of f.series) {
        if (f.kind !== 'histogram') {
          out += `${f.name}${s.labels === '' ? '' : `{${s.labels}}`} ${this.sum(s.cell)}\n`;
          continue;
        }
        const b = s.buckets!;
        const sep = s.labels === '' ? '' : ',';
        let cumulative = 0;
        for (let i = 0; i <= b.length; i++) {
          cumulative += this.sum(s.cell + i);
          out += `${f.name}_bucket{${s.labels}${sep}le="${i < b.length ? b[i] : '+Inf'}"} ${cumulative}\n`;
        }
        const l = s.labels === '' ? '' : `{${s.labels}}`;
        out += `${f.name}_sum${l} ${this.sum(s.cell + b.length + 1)}\n${f.name}_count${l} ${cumulative}\n`;
      }
    }
    return out;
  }

  private sum(cell: number): number {
    let v = 0;
    for (let s = 0; s < this.slots; s++) v += this.cells[s * CAPACITY + cell]!;
    return v;
  }

  private alloc(
    name: string,
    help: string,
    kind: Kind,
    labels: Record<string, string> | undefined,
    width: number,
    buckets?: readonly number[],
  ): number {
    let f = this.families.get(name);
    if (f === undefined) this.families.set(name, (f = { name, help, kind, series: [] }));
    else if (f.kind !== kind) throw new TypeError(`metric ${name} is already a ${f.kind}`);
    if (this.next + width > CAPACITY) throw new RangeError(`metrics registry full (${CAPACITY} cells)`);
    const cell = this.next;
    this.next += width;
    const l =
      labels === undefined
        ? ''
        : Object.entries(labels)
            .map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, '_')}"`)
            .join(',');
    f.series.push({ labels: l, cell, ...(buckets ? { buckets } : {}) });
    return cell;
  }
}

export class Counter {
  constructor(
    private readonly cells: Float64Array,
    private readonly i: number,
  ) {}
  inc(n = 1): void {
    this.cells[this.i]! += n;
  }
}

/** Thread gauges add up across threads (e.g. each thread's spool depth → the process's). */
export class Gauge {
  constructor(
    private readonly cells: Float64Array,
    private readonly i: number,
  ) {}
  set(v: number): void {
    this.cells[this.i] = v;
  }
  inc(n = 1): void {
    this.cells[this.i]! += n;
  }
  dec(n = 1): void {
    this.cells[this.i]! -= n;
  }
}

export class Histogram {
  constructor(
    private readonly cells: Float64Array,
    private readonly i: number,
    private readonly buckets: readonly number[],
  ) {}
  observe(v: number): void {
    const b = this.buckets;
    let k = 0;
    while (k < b.length && v > b[k]!) k++;
    this.cells[this.i + k]! += 1;
    this.cells[this.i + b.length + 1]! += v;
  }
}
