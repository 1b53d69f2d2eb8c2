import { createServer } from 'node:net';

/** A free port of the range the dedupe tests' private Redis servers may use (7200–7249). */
export async function privateRedisPort(): Promise<number> {
  const first = Math.floor(Math.random() * 50);
  for (let n = 0; n < 50; n++) {
    const port = 7200 + ((first + n) % 50);
    const free = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error('no free port in 7200-7249');
}
