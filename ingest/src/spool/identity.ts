import { createHash, randomUUID } from 'node:crypto';
import { closeSync, fdatasyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { MeterdError } from '@meterd/core/errors';
import type { Pool } from '@meterd/core/store';
import { syncDir } from './segments.js';

/**
 * The spool's identity: which volume this is. A replaced volume (a new PersistentVolume, a wiped
 * disk) has none, or another one, while Postgres's `ingest_spools` row of the instance remembers the
 * spool it had and whether that spool may have held acknowledged rows that never reached
 * ClickHouse (state `open`). Their Redis dedupe keys are committed, so a client's retry would be
 * answered `duplicate: true` and the loss would be permanent and silent: ingest refuses to start
 * instead, until an operator has accounted for the loss (`npm run spool:lost`, identity-lost.ts).
 */
export interface SpoolIdentity {
  instance: string;
  spool_id: string;
  created_at: string;
}

export const IDENTITY_FILE = 'identity.json';
/** The operator command the refusal names (package.json `spool:lost`). */
export const LOST_COMMAND = 'npm run spool:lost -- --instance';

/** INGEST_INSTANCE, or by default the host name and a hash of the spool folder's absolute path. */
export function ingestInstance(cfg: { INGEST_INSTANCE: string; SPOOL_DIR: string }): string {
  if (cfg.INGEST_INSTANCE !== '') return cfg.INGEST_INSTANCE;
  const dir = createHash('sha256').update(resolve(cfg.SPOOL_DIR)).digest('hex').slice(0, 8);
  return `${hostname().replace(/[^A-Za-z0-9._-]/g, '_')}-${dir}`;
}

export interface SpoolRecord {
  instance: string;
  spool_id: string;
  spool_created_at: Date;
  state: 'open' | 'closed' | 'lost';
  updated_at: Date;
  lost_report: unknown;
}

/** The instance's previous spool may hold rows that were acknowledged and never shipped, and this one is not it. */
export class SpoolVolumeLostError extends MeterdError {
  constructor(
    readonly instance: string,
    readonly recorded: SpoolRecord,
    found: SpoolIdentity | undefined,
  ) {
    super(
      'METERD_INGEST_SPOOL_VOLUME_LOST',
      `ingest instance ${instance} had spool ${recorded.spool_id} (created ${recorded.spool_created_at.toISOString()}, last seen ${recorded.updated_at.toISOString()}, not closed cleanly), ` +
        `but its spool folder ${found === undefined ? 'is empty' : `holds spool ${found.spool_id} of ${found.instance}`}: the volume was lost or replaced, ` +
        'and rows acknowledged but not yet shipped to ClickHouse are gone while their idempotency keys still answer duplicate. ' +
        `Run \`${LOST_COMMAND} ${instance}\` to list them and let their retries be stored, then start again ` +
        '(or set SPOOL_ACCEPT_LOST_VOLUME=true to start without accounting; docs/deploy.md "A lost spool volume").',
    );
  }
}

export interface IdentityCheck {
  pool: Pool;
  /** SPOOL_DIR: the identity file sits at its top, beside the per-thread folders. */
  dir: string;
  instance: string;
  /**
   * Record the spool as `open` (INGEST_ACK=spool: it will hold acknowledged rows). With
   * INGEST_ACK=clickhouse nothing acknowledged waits on the disk, so nothing is recorded, and a
   * fresh disk at every start is normal; a refusal left by an earlier spool still applies.
   */
  register: boolean;
  acceptLost: boolean;
}

export type IdentityOutcome = 'same' | 'new' | 'accepted-lost';

/**
 * Runs once per process before any thread opens its spool. Refuses (SpoolVolumeLostError) when the
 * instance's row is `open` for another spool than the one on disk, unless `acceptLost`.
 */
export async function checkSpoolIdentity(
  c: IdentityCheck,
): Promise<{ identity: SpoolIdentity; outcome: IdentityOutcome }> {
  const local = readIdentity(c.dir);
  const { rows } = await c.pool.query<SpoolRecord>('SELECT * FROM ingest_spools WHERE instance = $1', [c.instance]);
  const rec = rows[0];
  const same = local !== undefined && rec !== undefined && rec.spool_id === local.spool_id;
  let outcome: IdentityOutcome = same ? 'same' : 'new';
  if (!same && rec?.state === 'open') {
    if (!c.acceptLost) throw new SpoolVolumeLostError(c.instance, rec, local);
    outcome = 'accepted-lost';
  }
  // A spool from before identities existed (segments, no file) is this instance's own: adopt it.
  const identity = local ?? writeIdentity(c.dir, c.instance);
  if (c.register)
    await c.pool.query(
      `INSERT INTO ingest_spools (instance, spool_id, spool_created_at, state) VALUES ($1, $2, $3, 'open')
       ON CONFLICT (instance) DO UPDATE SET spool_id = $2, spool_created_at = $3, state = 'open', updated_at = now(),
         lost_report = CASE WHEN ingest_spools.spool_id = $2 THEN ingest_spools.lost_report END`,
      [c.instance, identity.spool_id, identity.created_at],
    );
  return { identity, outcome };
}

/**
 * After a drain that left every thread's spool empty: nothing acknowledged waits on this volume, so
 * losing it from now on loses nothing. Only this spool's row is touched.
 */
export async function markSpoolClosed(pool: Pool, instance: string, spoolId: string): Promise<void> {
  await pool.query(
    `UPDATE ingest_spools SET state = 'closed', updated_at = now() WHERE instance = $1 AND spool_id = $2 AND state = 'open'`,
    [instance, spoolId],
  );
}

export function readIdentity(dir: string): SpoolIdentity | undefined {
  let text: string;
  try {
    text = readFileSync(join(dir, IDENTITY_FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  return JSON.parse(text) as SpoolIdentity;
}

/** Written durably (temp file, fdatasync, rename, directory sync) before the spool accepts anything. */
function writeIdentity(dir: string, instance: string): SpoolIdentity {
  const id: SpoolIdentity = { instance, spool_id: randomUUID(), created_at: new Date().toISOString() };
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, `${IDENTITY_FILE}.tmp`);
  const fd = openSync(tmp, 'w');
  try {
    writeSync(fd, JSON.stringify(id));
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, join(dir, IDENTITY_FILE));
  syncDir(dir);
  return id;
}
