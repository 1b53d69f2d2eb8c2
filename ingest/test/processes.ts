import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { until } from './helpers.js';
import { freePort } from '@meterd/core/net';
export { freePort };

export const INGEST_MAIN = fileURLToPath(new URL('../src/main.js', import.meta.url));

/** Ingest as a real child process (for kill -9): resolves once /healthz answers. */
export async function spawnIngest(
  env: Record<string, string>,
): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  let out = '';
  const child = spawn(process.execPath, [INGEST_MAIN], {
    env: { ...process.env, LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (c) => (out += c));
  child.stderr!.on('data', (c) => (out += c));
  const url = `http://127.0.0.1:${env.INGEST_PORT}`;
  await until(
    async () => {
      if (child.exitCode !== null) throw new Error(`ingest exited with ${child.exitCode}: ${out}`);
      return fetch(url + '/readyz').then(
        (r) => r.status,
        () => 0,
      );
    },
    (s) => s === 200,
    15_000,
    'ingest to be ready',
  );
  return { child, url, output: () => out };
}

/** SIGTERM, resolved once it exited: ingest ships its spool and records a clean stop. */
export function stopClean(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

export function killHard(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

/**
 * A ClickHouse server of the test's own (Debian's clickhouse-server, installed by the stack
 * script) on random ports with its data in `dir`: the outage test stops and restarts it without
 * disturbing the shared server other tests use.
 */
export class PrivateClickHouse {
  child: ChildProcess | undefined;
  constructor(
    readonly dir: string,
    readonly httpPort: number,
    readonly tcpPort: number,
  ) {
    for (const d of ['data', 'tmp', 'log', 'user_files', 'format_schemas'])
      mkdirSync(join(dir, d), { recursive: true });
    writeFileSync(
      join(dir, 'config.xml'),
      `<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>${dir}/log/server.log</log><errorlog>${dir}/log/server.err.log</errorlog><size>10M</size><count>1</count></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>${httpPort}</http_port>
  <tcp_port>${tcpPort}</tcp_port>
  <max_concurrent_queries>50</max_concurrent_queries>
  <mark_cache_size>268435456</mark_cache_size>
  <path>${dir}/data/</path>
  <tmp_path>${dir}/tmp/</tmp_path>
  <user_files_path>${dir}/user_files/</user_files_path>
  <format_schema_path>${dir}/format_schemas/</format_schema_path>
  <users_config>${dir}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mlock_executable>false</mlock_executable>
</yandex>`,
    );
    writeFileSync(
      join(dir, 'users.xml'),
      `<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>`,
    );
  }

  get url(): string {
    return `http://127.0.0.1:${this.httpPort}`;
  }

  async start(): Promise<void> {
    this.child = spawn('clickhouse-server', [`--config-file=${join(this.dir, 'config.xml')}`], { stdio: 'ignore' });
    await until(
      () =>
        fetch(this.url + '/ping').then(
          (r) => r.status,
          () => 0,
        ),
      (s) => s === 200,
      30_000,
      'private ClickHouse to answer',
    );
  }

  async stop(): Promise<void> {
    const c = this.child;
    if (c === undefined || c.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve());
      c.kill('SIGTERM');
    });
    this.child = undefined;
  }
}

/**
 * A Redis server of the test's own, with an fsync'd append-only file so a restart keeps its data
 * (`persist: false`: nothing on disk, so a restart starts empty, like a lost Redis).
 */
export class PrivateRedis {
  child: ChildProcess | undefined;
  constructor(
    readonly dir: string,
    readonly port: number,
    readonly persist = true,
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.child = spawn(
      'redis-server',
      [
        '--port',
        String(this.port),
        '--bind',
        '127.0.0.1',
        '--dir',
        this.dir,
        '--save',
        '',
        ...(this.persist ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no']),
      ],
      { stdio: 'ignore' },
    );
    const { Redis } = await import('ioredis');
    await until(
      async () => {
        const r = new Redis(this.url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
        r.on('error', () => {}); // refused while the server starts: the poll's expected answer
        try {
          await r.connect();
          return await r.ping();
        } catch {
          return '';
        } finally {
          r.disconnect();
        }
      },
      (p) => p === 'PONG',
      15_000,
      'private Redis to answer',
    );
  }

  /** kill -9: an outage, not a clean shutdown. */
  async kill(): Promise<void> {
    if (this.child) await killHard(this.child);
    this.child = undefined;
  }
}

/**
 * A Postgres cluster of the test's own (Debian's binaries, initdb as the `postgres` user, which
 * needs root to switch to), stopped and started without touching the shared server.
 */
export class PrivatePostgres {
  child: ChildProcess | undefined;
  readonly bin: string;
  constructor(
    readonly dir: string,
    readonly port: number,
  ) {
    const versions = readdirSync('/usr/lib/postgresql').sort();
    this.bin = join('/usr/lib/postgresql', versions.at(-1)!, 'bin');
  }

  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  static available(): boolean {
    return process.getuid?.() === 0 && existsSync('/usr/lib/postgresql');
  }

  init(): void {
    chmodSync(this.dir, 0o777);
    const r = spawnSync(
      'runuser',
      [
        '-u',
        'postgres',
        '--',
        join(this.bin, 'initdb'),
        '-D',
        join(this.dir, 'data'),
        '-U',
        'postgres',
        '--auth=trust',
      ],
      { encoding: 'utf8' },
    );
    if (r.status !== 0) throw new Error(`initdb failed: ${r.stderr}`);
  }

  async start(): Promise<void> {
    this.child = spawn(
      'runuser',
      [
        '-u',
        'postgres',
        '--',
        join(this.bin, 'postgres'),
        '-D',
        join(this.dir, 'data'),
        '-p',
        String(this.port),
        '-k',
        this.dir,
        '-c',
        'listen_addresses=127.0.0.1',
      ],
      { stdio: 'ignore' },
    );
    await until(
      () => {
        const r = spawnSync(join(this.bin, 'pg_isready'), ['-h', '127.0.0.1', '-p', String(this.port)]);
        return Promise.resolve(r.status);
      },
      (s) => s === 0,
      20_000,
      'private Postgres to answer',
    );
  }

  /** A fast shutdown (SIGINT to the postmaster), as an operator's restart would do. */
  async stop(): Promise<void> {
    const c = this.child;
    if (c === undefined || c.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve());
      spawnSync('runuser', [
        '-u',
        'postgres',
        '--',
        join(this.bin, 'pg_ctl'),
        '-D',
        join(this.dir, 'data'),
        '-m',
        'fast',
        'stop',
      ]);
    });
    this.child = undefined;
  }
}
