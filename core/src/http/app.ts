import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { AddressInfo } from 'node:net';
import { serveProbes, type Probes } from './probes.js';

/**
 * A Fastify instance for a service's non-hot HTTP surface, with the operational routes installed.
 * Services log through their own pino logger, so Fastify's request logging stays off. close()
 * lets requests in flight finish and ends idle keep-alive connections (Fastify's default), so a
 * drained process is not held open by an idle client.
 */
export function createServiceApp(probes: Probes, options: FastifyServerOptions = {}): FastifyInstance {
  const app = Fastify({ logger: false, ...options });
  serveProbes(app, probes);
  return app;
}

/** Listens and returns the bound port (port 0 picks a free one). */
export async function listenOn(app: FastifyInstance, port: number, host: string): Promise<number> {
  await app.listen({ port, host });
  return (app.server.address() as AddressInfo).port;
}
