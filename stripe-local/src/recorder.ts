import { appendFileSync, mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';

/**
 * Opt-in (STRIPE_LOCAL_RECORD_DIR): appends every JSON object stripe-local returns or sends —
 * each object carrying an `object` field, nested ones included — to one JSON-lines file per
 * process, `{ "object": <its object field>, "where": <route>, "value": <the object> }`. The
 * conformance test (test/conformance.test.ts) compares them with Stripe's published fixtures, so
 * any route, including ones added later, is checked once some test exercises it.
 */
export class Recorder {
  private readonly file: string;

  constructor(dir: string) {
    mkdirSync(dir, { recursive: true });
    this.file = join(dir, `stripe-local-${process.pid}-${randomBytes(4).toString('hex')}.jsonl`);
  }

  /** `body` is a JSON text as sent; a body that is not JSON (a portal page) is not an API object. */
  record(body: string, where: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      return;
    }
    const lines: string[] = [];
    visit(parsed, (o) => lines.push(JSON.stringify({ object: o.object, where, value: o })));
    // Synchronous on purpose: recording is a test-only switch, and a line must not be lost at exit.
    if (lines.length > 0) appendFileSync(this.file, `${lines.join('\n')}\n`);
  }
}

function visit(v: unknown, found: (o: Record<string, unknown> & { object: string }) => void): void {
  if (Array.isArray(v)) {
    for (const x of v) visit(x, found);
    return;
  }
  if (typeof v !== 'object' || v === null) return;
  const o = v as Record<string, unknown>;
  if (typeof o.object === 'string') found(o as Record<string, unknown> & { object: string });
  for (const x of Object.values(o)) visit(x, found);
}
