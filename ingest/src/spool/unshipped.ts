import { closeSync, openSync, readSync } from 'node:fs';
import { readCheckpoint, segmentPath } from './segments.js';
import type { SpoolWriter } from './writer.js';

/**
 * Every row that is durable in the spool and not yet shipped, oldest first, read synchronously:
 * meant for start-up, before the thread accepts requests (after recovery trimmed torn tails).
 */
export function* unshippedLines(writer: SpoolWriter): Generator<string> {
  const cp = readCheckpoint(writer.dir);
  const buf = Buffer.allocUnsafe(1 << 20);
  for (const seg of writer.segments) {
    if (seg.seq < cp.segment) continue;
    let pos = seg.seq === cp.segment ? cp.offset : 0;
    if (pos >= seg.size) continue;
    const fd = openSync(segmentPath(writer.dir, seg.seq), 'r');
    try {
      let rest = '';
      while (pos < seg.size) {
        const n = readSync(fd, buf, 0, Math.min(buf.length, seg.size - pos), pos);
        if (n === 0) break;
        pos += n;
        const lines = (rest + buf.toString('utf8', 0, n)).split('\n');
        rest = lines.pop()!;
        for (const l of lines) if (l.length > 0) yield l;
      }
    } finally {
      closeSync(fd);
    }
  }
}
