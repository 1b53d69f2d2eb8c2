// Preloaded into every test file by scripts/test.sh (node --test --import). It turns the two ways a
// test file can hang into fast failures that name themselves:
//  - a test still running after METERD_TEST_TIMEOUT_MS: its name and file are printed and the file
//    fails at once (node's own --test-timeout, set higher in test.sh, is the backstop for hooks and
//    names only the file);
//  - a file whose tests all finished but whose process stays alive (a timer or socket left open
//    after close): what is left on its event loop is printed and the file fails. The grace counts
//    from the start of the file's after() hooks (this preload's hook runs first), so it covers a
//    cleanup that hangs too, and is long enough for a slow one (dropping databases on a busy machine).
// Both timers are unref()ed: they never keep a healthy file alive.
import { after, afterEach, beforeEach } from 'node:test';

const testLimitMs = Number(process.env.METERD_TEST_TIMEOUT_MS ?? 180_000);
const exitGraceMs = Number(process.env.METERD_TEST_EXIT_GRACE_MS ?? 60_000);
const file = process.argv[1];
const timers = new Map();

function fail(message) {
  process.stderr.write(`\nWATCHDOG: ${message}\n`);
  process.exit(1);
}

beforeEach((t) => {
  const started = Date.now();
  const timer = setTimeout(
    () =>
      fail(
        `test "${t.name}" in ${file} did not finish within ${testLimitMs} ms (started ${new Date(started).toISOString()})`,
      ),
    testLimitMs,
  );
  timers.set(t, timer.unref());
});

afterEach((t) => {
  clearTimeout(timers.get(t));
  timers.delete(t);
});

after(() => {
  setTimeout(() => {
    fail(
      `${file} finished its tests but did not exit within ${exitGraceMs} ms; still on its event loop: ${JSON.stringify(process.getActiveResourcesInfo())}`,
    );
  }, exitGraceMs).unref();
});
