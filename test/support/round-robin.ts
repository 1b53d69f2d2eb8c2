import net from 'node:net';

/**
 * A TCP balancer in front of several replicas of one service, as a Kubernetes Service is: each new
 * connection goes to the next upstream in turn. A connection to an upstream that is down is closed
 * at once (the client sees a reset and retries), so a killed replica is noticed, not waited on.
 */
export class RoundRobin {
  private next = 0;
  private readonly sockets = new Set<net.Socket>();
  private constructor(
    private readonly server: net.Server,
    private readonly ports: readonly number[],
  ) {}

  static async start(ports: readonly number[]): Promise<RoundRobin> {
    const server = net.createServer();
    const rr = new RoundRobin(server, ports);
    server.on('connection', (client) => rr.pipe(client));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return rr;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as net.AddressInfo).port}`;
  }

  private pipe(client: net.Socket): void {
    const port = this.ports[this.next++ % this.ports.length]!;
    const upstream = net.connect(port, '127.0.0.1');
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => (s === client ? upstream : client).destroy());
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((r) => this.server.close(() => r()));
  }
}
