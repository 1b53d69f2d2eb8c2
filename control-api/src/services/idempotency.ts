import { ApiError } from '@meterd/core/errors';
import { type Pool } from '@meterd/core/store';
import type { SecretBox } from '../crypto/secret-box.js';

/** How long a key is remembered, like Stripe's. */
export const IDEMPOTENCY_TTL_HOURS = 24;
/**
 * How long a first request holds its key without a heartbeat: while its handler runs the lease is
 * renewed every LEASE_SECONDS / 3, so only a process that died (or lost Postgres) lets it lapse.
 */
export const LEASE_SECONDS = 60;
/** Rows one cleanup statement deletes: bounded work per tick, whatever has piled up. */
export const CLEANUP_BATCH = 1_000;

export type Begin = { kind: 'owner' } | { kind: 'replay'; status: number; body: string };

/**
 * Idempotency-Key records in Postgres. A key is scoped to its caller (a workspace, the operator, a
 * signup's client address), so one tenant can neither replay nor block another's. The first
 * request inserts its row and runs; a concurrent one with the same key waits on the row lock and
 * then sees it running (409 idempotency_key_in_use); a later one gets the stored answer, or 409
 * idempotency_key_reused when its method, path or body differ.
 *
 * The create commits before its answer is stored (in onSend), so a lapsed lease with no answer
 * means the first request stopped somewhere in between: its create may have committed. Running it
 * again could mint a second key or endpoint, so the key stays refused (409, no Retry-After) until
 * it expires; the caller checks what exists and uses a new key (docs/control-api.md).
 *
 * A stored answer may hold a secret shown once (signup's and a minted key's `sks_` token, a webhook
 * endpoint's `whsec_` secret), so it is sealed with SECRETS_KEY like every secret at rest, bound to
 * its scope, key and request fingerprint: a row copied under another caller does not open.
 */
export class IdempotencyService {
  constructor(
    private readonly pool: Pool,
    private readonly box: SecretBox,
  ) {}

  async begin(scope: string, key: string, fingerprint: Buffer): Promise<Begin> {
    // Two tries: the row may expire and be cleaned up between the insert and the read.
    for (let attempt = 0; attempt < 2; attempt++) {
      // Takes the row over only when it expired.
      const { rowCount } = await this.pool.query(
        `INSERT INTO idempotency_keys (scope, key, fingerprint, locked_until, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => ${LEASE_SECONDS}), now() + make_interval(hours => ${IDEMPOTENCY_TTL_HOURS}))
         ON CONFLICT (scope, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, status = NULL, response = NULL,
           locked_until = EXCLUDED.locked_until, created_at = now(), expires_at = EXCLUDED.expires_at
         WHERE idempotency_keys.expires_at <= now()`,
        [scope, key, fingerprint],
      );
      if (rowCount === 1) return { kind: 'owner' };
      const { rows } = await this.pool.query<{
        fingerprint: Buffer;
        status: number | null;
        response: string | null;
        wait_s: number;
      }>(
        `SELECT fingerprint, status, response, ceil(extract(epoch FROM locked_until - now()))::int AS wait_s
           FROM idempotency_keys WHERE scope = $1 AND key = $2 AND expires_at > now()`,
        [scope, key],
      );
      const row = rows[0];
      if (row === undefined) continue;
      if (!row.fingerprint.equals(fingerprint))
        throw new ApiError(
          'idempotency_key_reused',
          'this Idempotency-Key was used for a request with another method, path or body',
          'Idempotency-Key',
        );
      if (row.status === null && row.wait_s <= 0)
        throw new ApiError(
          'idempotency_key_in_use',
          'the first request with this Idempotency-Key stopped before its answer was stored, so whether it created anything is unknown; check, then retry with a new key',
          'Idempotency-Key',
        );
      if (row.status === null)
        throw Object.assign(
          new ApiError(
            'idempotency_key_in_use',
            'a request with this Idempotency-Key is still running; retry after the Retry-After seconds',
            'Idempotency-Key',
            { retryable: true },
          ),
          { retryAfter: Math.min(row.wait_s, 5) },
        );
      const body = row.response === null ? '' : this.box.open(row.response, responseAad(scope, key, fingerprint));
      return { kind: 'replay', status: row.status, body };
    }
    throw new ApiError(
      'service_unavailable',
      'the Idempotency-Key record changed while it was read; retry',
      undefined,
      {
        retryable: true,
      },
    );
  }

  /** Stores the first request's answer, replayed to every later request with the key. */
  async finish(scope: string, key: string, fingerprint: Buffer, status: number, body: string): Promise<void> {
    await this.pool.query(
      'UPDATE idempotency_keys SET status = $3, response = $4 WHERE scope = $1 AND key = $2 AND status IS NULL',
      [scope, key, status, this.box.seal(body, responseAad(scope, key, fingerprint))],
    );
  }

  /** Renews a running request's lease (its heartbeat), so a create that takes long is not thought dead. */
  async extend(scope: string, key: string): Promise<void> {
    await this.pool.query(
      `UPDATE idempotency_keys SET locked_until = now() + make_interval(secs => ${LEASE_SECONDS})
        WHERE scope = $1 AND key = $2 AND status IS NULL`,
      [scope, key],
    );
  }

  /** Forgets a key whose request failed (validation, conflict, a 5xx), so a retry with it runs again. */
  async abandon(scope: string, key: string): Promise<void> {
    await this.pool.query('DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND status IS NULL', [
      scope,
      key,
    ]);
  }

  /** Deletes up to CLEANUP_BATCH expired rows, oldest first, through the expiry index; returns how many. */
  async cleanup(): Promise<number> {
    const { rowCount } = await this.pool.query(
      `DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
         SELECT ctid FROM idempotency_keys WHERE expires_at <= now() ORDER BY expires_at LIMIT ${CLEANUP_BATCH}))`,
    );
    return rowCount ?? 0;
  }
}

/** What a stored answer is bound to (the rewrap command rebuilds it from the row). */
export function responseAad(scope: string, key: string, fingerprint: Buffer): string {
  return `idempotency\0${scope}\0${key}\0${fingerprint.toString('hex')}`;
}
