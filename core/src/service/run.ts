import { isMeterdError } from '../errors/index.js';
import { createLogger, type Logger } from '../log.js';

/** What a service's start() is given: its logger, and the signal that flips readiness off. */
export interface ServiceContext {
  log: Logger;
  /**
   * Aborted when the process is asked to stop: /readyz answers 503 from then on, and a start()
   * still waiting for a store gives up. close() follows.
   */
  draining: AbortSignal;
  /** The environment the config was read from (worker threads read their config from it again). */
  env: NodeJS.ProcessEnv;
}

/** A started service: close() finishes the work in flight and releases every handle. */
export interface Service {
  close(): Promise<void>;
  /** For a service that ends by itself (a one-shot run): the process closes it once this settles. */
  done?: Promise<void>;
}

/** The settings runService itself reads from a service's config. */
interface RunSettings {
  readonly LOG_LEVEL: string;
  /** Readiness off → this long → close(); absent means 0. */
  readonly SHUTDOWN_DELAY_MS?: number;
}

export interface ServiceSpec<C extends RunSettings, S extends Service = Service> {
  name: string;
  /** Parses and validates the environment once; throws ConfigError naming every problem. */
  loadConfig(env?: NodeJS.ProcessEnv): C;
  start(cfg: C, ctx: ServiceContext): Promise<S>;
  /** Longest wait for close() (after SHUTDOWN_DELAY_MS) before the process exits anyway (default 10 s). */
  drainMs?: number;
}

/** A service started in-process, with the drain sequence the process entry point runs. */
export interface StartedService<S extends Service> {
  service: S;
  log: Logger;
  /** Readiness off, then close(); resolves once closed, or rejects with close()'s error. */
  drain(): Promise<void>;
  /** Readiness off, without closing yet (what the first half of drain() does). */
  markDraining(): void;
}

/**
 * Starts a service in-process: config (throws ConfigError), logger, start. Tests use this to run a
 * service exactly as its entry point does, without the process-level signal handling.
 */
export async function startService<C extends RunSettings, S extends Service>(
  spec: ServiceSpec<C, S>,
  env: NodeJS.ProcessEnv = process.env,
  draining = new AbortController(),
): Promise<StartedService<S>> {
  const cfg = spec.loadConfig(env);
  const log = createLogger(spec.name, cfg.LOG_LEVEL);
  const service = await spec.start(cfg, { log, draining: draining.signal, env });
  return {
    service,
    log,
    markDraining: () => draining.abort(),
    drain() {
      draining.abort();
      return service.close();
    },
  };
}

/**
 * A service's process entry point. A bad config prints its problems and exits 1 before anything
 * starts. SIGTERM/SIGINT flip readiness off first, keep serving for SHUTDOWN_DELAY_MS (so a load
 * balancer stops sending before connections are refused), then close the service: its listener
 * first, then the drain. If close() has not finished within drainMs the process exits anyway, so a
 * stuck dependency cannot keep a rolling deploy waiting forever. A signal during start() aborts it;
 * a second signal skips the rest of the delay.
 */
export async function runService<C extends RunSettings, S extends Service>(spec: ServiceSpec<C, S>): Promise<void> {
  let cfg: C;
  try {
    cfg = spec.loadConfig();
  } catch (err) {
    // A ConfigError's message lists every problem; any other start-up refusal is a bug: show the stack.
    console.error(isMeterdError(err) ? `${spec.name}: ${err.message}` : err);
    process.exit(1);
  }
  const log = createLogger(spec.name, cfg.LOG_LEVEL);
  const draining = new AbortController();
  let service: S | undefined;
  let stopping = false;
  let closing: Promise<void> | undefined;

  const delayMs = cfg.SHUTDOWN_DELAY_MS ?? 0;
  let delay: NodeJS.Timeout | undefined;
  const stop = (reason: string): void => {
    if (!stopping) {
      stopping = true;
      draining.abort();
      log.info({ reason, shutdown_delay_ms: delayMs }, `stopping ${spec.name}`);
      const drainMs = spec.drainMs ?? 10_000;
      setTimeout(() => {
        log.warn({ drain_ms: drainMs }, `${spec.name} did not close in time; exiting`);
        process.exit();
      }, delayMs + drainMs).unref();
      if (delayMs > 0 && service !== undefined) {
        delay = setTimeout(() => stop('shutdown delay over'), delayMs);
        return;
      }
    } else if (delay !== undefined) {
      clearTimeout(delay);
      delay = undefined;
    }
    // Not started yet: start() sees the aborted signal, and the code after it calls stop() again.
    if (service === undefined || closing !== undefined) return;
    closing = service.close().then(
      () => process.exit(),
      (err: unknown) => {
        log.error({ err }, `error while stopping ${spec.name}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  try {
    service = await spec.start(cfg, { log, draining: draining.signal, env: process.env });
  } catch (err) {
    if (draining.signal.aborted) process.exit(0);
    log.fatal({ err }, `${spec.name} failed to start`);
    process.exit(1);
  }
  if (stopping) return stop('stopped while starting');
  service.done?.then(
    () => stop('done'),
    (err: unknown) => {
      log.fatal({ err }, `${spec.name} failed`);
      process.exitCode = 1;
      stop('failed');
    },
  );
}
