import { closeSync, fdatasyncSync, linkSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { threadId } from 'node:worker_threads';
import { SpoolLockError, SpoolLockedError, SpoolLockLostError } from './errors.js';
import { syncDir } from './segments.js';

/**
 * One writer per spool folder. Node has no flock(2), so the lock is a file created exclusively
 * (link(2) of a finished temporary file: as exclusive as O_CREAT|O_EXCL, and a reader never sees
 * a half-written lock) naming the holder's pid and its start time from /proc/<pid>/stat. A lock
 * whose process is gone, or whose pid now belongs to a process started at another time (pid
 * reuse after a reboot or in a fresh container), is stale and taken over.
 *
 * Threads: every ingest thread of one process shares its pid, so a lock naming this pid and
 * another thread is taken to be left by a thread that died (main.ts starts thread i again only
 * after the previous thread i exited). Exclusion between threads of one process therefore rests
 * on each thread having its own folder (SPOOL_DIR/t<i>); across processes it is enforced here.
 */
export interface LockHolder {
  pid: number;
  /** Process start time in clock ticks since boot (/proc/<pid>/stat field 22); null where /proc is absent. */
  start: number | null;
  thread: number;
}

/** Folders locked by this thread, so a second open in the same thread is refused too. */
const heldHere = new Set<string>();

export function processStartTime(pid: number): number | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) is in parentheses and may hold spaces: count fields after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const v = Number(rest[22 - 3]);
  return Number.isSafeInteger(v) ? v : null;
}

function isAlive(h: LockHolder): boolean {
  try {
    process.kill(h.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    // EPERM: it exists but belongs to another user.
  }
  if (h.start === null) return true;
  const now = processStartTime(h.pid);
  // Without /proc we cannot tell a reused pid from the holder: assume the holder, the safe side.
  return now === null || now === h.start;
}

export class FolderLock {
  private constructor(
    readonly dir: string,
    readonly path: string,
    private readonly token: string,
  ) {}

  /** Takes the lock of `dir` or throws SpoolLockedError naming the live holder. */
  static acquire(dir: string): FolderLock {
    const path = join(dir, 'lock');
    if (heldHere.has(path)) throw new SpoolLockedError(dir, process.pid, 'already opened by this thread');
    const me: LockHolder = { pid: process.pid, start: processStartTime(process.pid), thread: threadId };
    const token = JSON.stringify(me);
    const tmp = join(dir, `lock.${process.pid}.${threadId}.tmp`);
    try {
      const fd = openSync(tmp, 'w');
      try {
        writeSync(fd, token);
        fdatasyncSync(fd);
      } finally {
        closeSync(fd);
      }
    } catch (err) {
      throw new SpoolLockError(dir, 'writing the lock file', err);
    }
    try {
      // A few rounds: a stale lock taken over by someone else between our read and our rename.
      for (let attempt = 0; attempt < 5; attempt++) {
        try {
          linkSync(tmp, path);
          syncDir(dir);
          heldHere.add(path);
          return new FolderLock(dir, path, token);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST')
            throw new SpoolLockError(dir, 'creating the lock file', err);
        }
        const seen = readLock(path);
        if (seen === undefined) continue; // released meanwhile
        const holder = parseHolder(seen);
        if (holder !== undefined && isLive(holder, me)) {
          throw new SpoolLockedError(
            dir,
            holder.pid,
            holder.pid === me.pid ? 'another thread of this process' : 'a live process',
          );
        }
        removeStale(path, seen);
      }
      throw new SpoolLockedError(dir, parseHolder(readLock(path) ?? '')?.pid ?? 0, 'the lock kept changing hands');
    } finally {
      try {
        unlinkSync(tmp);
      } catch {
        /* already gone */
      }
    }
  }

  /** Throws SpoolLockLostError when the lock file no longer names this writer (removed or taken over). */
  assertHeld(): void {
    const seen = readLock(this.path);
    if (seen !== this.token)
      throw new SpoolLockLostError(this.dir, seen === undefined ? 'the lock file is gone' : `it now names ${seen}`);
  }

  release(): void {
    heldHere.delete(this.path);
    try {
      if (readLock(this.path) === this.token) unlinkSync(this.path);
    } catch {
      // Leaving our own lock behind is harmless: the next opener sees this process gone or itself.
    }
  }
}

function readLock(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new SpoolLockError(path, 'reading the lock file', err);
  }
}

function parseHolder(text: string): LockHolder | undefined {
  try {
    const h = JSON.parse(text) as LockHolder;
    if (Number.isSafeInteger(h.pid) && h.pid > 0)
      return { pid: h.pid, start: Number.isSafeInteger(h.start) ? h.start : null, thread: Number(h.thread) };
  } catch {
    // Unreadable content: no process can be named, so it is treated as stale.
  }
  return undefined;
}

function isLive(h: LockHolder, me: LockHolder): boolean {
  if (h.pid === me.pid && h.start === me.start) {
    // This process. Another thread's lock is a dead thread's (see the class comment); this
    // thread's own open locks are caught by heldHere before we get here.
    return false;
  }
  return isAlive(h);
}

/**
 * Removes a stale lock without removing a fresh one that replaced it meanwhile: rename it aside
 * (atomic; only one contender gets it), then check it is the lock we judged stale.
 */
function removeStale(path: string, judged: string): void {
  const aside = `${path}.stale.${process.pid}.${threadId}`;
  try {
    renameSync(path, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new SpoolLockError(path, 'taking over a stale lock', err);
  }
  const moved = readLock(aside);
  if (moved !== judged) {
    // We moved a lock someone took in between: put it back if the place is still free.
    try {
      linkSync(aside, path);
    } catch {
      /* a third contender holds it now */
    }
  }
  try {
    unlinkSync(aside);
  } catch {
    /* gone */
  }
}
