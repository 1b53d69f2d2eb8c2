import {
  closeSync,
  fdatasyncSync,
  fstatSync,
  ftruncateSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  unlinkSync,
  writeFileSync,
  mkdirSync,
} from 'node:fs';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';

/**
 * On-disk layout of one thread's spool: numbered segment files of newline-delimited JSONEachRow
 * rows (`000000000001.ndjson`, …) and a `checkpoint` naming the first byte not yet in ClickHouse.
 * Rows are written in ClickHouse's input format so shipping sends the file bytes as they are.
 */
export interface Position {
  segment: number;
  offset: number;
}

const SEGMENT_RE = /^(\d{12})\.ndjson$/;

export function segmentPath(dir: string, seq: number): string {
  return join(dir, `${String(seq).padStart(12, '0')}.ndjson`);
}

/**
 * A segment abandoned after a failed write whose tail could not be cut back carries a sidecar
 * `<segment>.durable` holding its durable size: bytes past it belong to requests that were answered
 * with an error, and recovery cuts them off instead of shipping them.
 */
export function durableMarkPath(dir: string, seq: number): string {
  return `${segmentPath(dir, seq)}.durable`;
}

export function writeDurableMark(dir: string, seq: number, size: number): void {
  const path = durableMarkPath(dir, seq);
  replaceDurably(dir, path, String(size));
}

export function readDurableMark(dir: string, seq: number): number | undefined {
  try {
    const n = Number(readFileSync(durableMarkPath(dir, seq), 'utf8'));
    return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export function removeDurableMark(dir: string, seq: number): void {
  try {
    unlinkSync(durableMarkPath(dir, seq));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

export function listSegments(dir: string): number[] {
  mkdirSync(dir, { recursive: true });
  return readdirSync(dir)
    .map((n) => SEGMENT_RE.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
}

export function readCheckpoint(dir: string): Position {
  try {
    const p = JSON.parse(readFileSync(join(dir, 'checkpoint'), 'utf8')) as Position;
    if (Number.isSafeInteger(p.segment) && Number.isSafeInteger(p.offset)) return p;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  return { segment: 0, offset: 0 };
}

export function writeCheckpoint(dir: string, p: Position): void {
  replaceDurably(dir, join(dir, 'checkpoint'), JSON.stringify(p));
}

/** Atomic replace: write a temporary file, fsync it, rename over the old one, fsync the folder. */
export function replaceDurably(dir: string, path: string, text: string): void {
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, text);
  const fd = openSync(tmp, 'r');
  try {
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  syncDir(dir);
}

export function syncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * A process killed mid-write can leave a partial last row. Such a row was never acknowledged (the
 * 202 comes after fdatasync), so cutting the file back to its last newline loses nothing promised.
 * With `durable` (an abandoned segment's recorded size), bytes past it are cut first.
 * Returns the file's size after the cut and how many rows it holds from `from` on.
 */
export function trimTornTail(path: string, from: number, durable?: number): { size: number; rows: number } {
  const fd = openSync(path, 'r+');
  try {
    const actual = fstatSync(fd).size;
    const size = durable === undefined ? actual : Math.min(actual, durable);
    const buf = Buffer.allocUnsafe(1 << 20);
    let rows = 0;
    let lastNewline = from - 1;
    for (let pos = from; pos < size;) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, size - pos), pos);
      if (n === 0) break;
      for (let i = buf.indexOf(10, 0); i !== -1 && i < n; i = buf.indexOf(10, i + 1)) {
        rows++;
        lastNewline = pos + i;
      }
      pos += n;
    }
    const keep = Math.max(from, lastNewline + 1);
    if (keep < actual) {
      ftruncateSync(fd, keep);
      fdatasyncSync(fd);
    }
    return { size: keep, rows };
  } finally {
    closeSync(fd);
  }
}

/**
 * The spool's own id, made once when the folder is first used: shipped batches are named
 * `<spool id>:<segment>:<offset>`, so a batch shipped again after a crash (by this thread or by the
 * thread that ships an orphaned folder) carries the same name, and two spools never share one.
 */
export function spoolId(dir: string): string {
  const path = join(dir, 'spool-id');
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  mkdirSync(dir, { recursive: true });
  const id = randomUUID();
  replaceDurably(dir, path, id);
  return id;
}
