import { BlockList, createServer, isIP } from 'node:net';

/**
 * A test for addresses against a list of IPs and CIDR blocks, as TRUSTED_PROXIES holds them (already
 * validated by the config's addressList). An IPv4-mapped IPv6 address matches its IPv4 entry.
 */
export function addressMatcher(items: readonly string[]): (address: string) => boolean {
  if (items.length === 0) return () => false;
  const list = new BlockList();
  for (const item of items) {
    const [addr, bits] = item.split('/') as [string, string | undefined];
    const type = isIP(addr) === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) list.addAddress(addr, type);
    else list.addSubnet(addr, Number(bits), type);
  }
  return (address) => {
    const v4 = address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
    const family = isIP(v4);
    return family !== 0 && list.check(v4, family === 6 ? 'ipv6' : 'ipv4');
  };
}

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
