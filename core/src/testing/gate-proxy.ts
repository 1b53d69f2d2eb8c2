import net from 'node:net';

/**
 * A TCP proxy to a real server that can hold traffic: while held, bytes from clients are buffered,
 * not forwarded. Lets a test put a store round trip "in flight" for as long as it needs, e.g. to
 * stop a service exactly while a health check awaits Redis.
 */
export class GateProxy {
  private held = false;
  private buffered: Array<() => void> = [];
  private readonly sockets = new Set<net.Socket>();
  heldBytes = 0;
  private constructor(private readonly server: net.Server) {}

  static async start(target: { host: string; port: number }): Promise<GateProxy> {
    const server = net.createServer();
    const proxy = new GateProxy(server);
    server.on('connection', (client) => {
      const upstream = net.connect(target.port, target.host);
      for (const s of [client, upstream]) {
        proxy.sockets.add(s);
        s.on('close', () => proxy.sockets.delete(s));
        s.on('error', () => (s === client ? upstream : client).destroy());
      }
      client.on('data', (d) => {
        if (!proxy.held) return void upstream.write(d);
        proxy.heldBytes += d.length;
        proxy.buffered.push(() => upstream.write(d));
      });
      upstream.on('data', (d) => client.write(d));
      client.on('end', () => upstream.end());
      upstream.on('end', () => client.end());
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return proxy;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  hold(): void {
    this.held = true;
    this.heldBytes = 0;
  }

  release(): void {
    this.held = false;
    for (const send of this.buffered.splice(0)) send();
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((r) => this.server.close(() => r()));
  }
}
