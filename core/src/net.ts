import { createServer } from 'node:net';

/**
 * A loopback port nobody listens on right now: the OS picks it, we release it and hand it on
 * (tests, the bench and the local provisioning driver start servers on such ports).
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}
