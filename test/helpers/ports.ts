// A free loopback TCP port for a server a test starts itself (a private redis-server, clamd,
// a port that must stay closed). Bound and released at once, so another process could take it
// in between; the tests that use it start their server right after.
import { createServer } from 'node:net';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}
