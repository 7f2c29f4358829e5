// A TCP relay on loopback that holds every chunk for `oneWayMs` in each direction, so a next hop
// on the same machine answers as one across a WAN would: the round trip becomes 2 × oneWayMs
// (plus loopback's). The relay bench puts it between Postern and the sink to show what a client
// that waits for each reply costs against one that pipelines (RFC 2920). Config keys: none.
import { connect, createServer, type Socket } from 'node:net';

export interface DelayProxy {
  port: number;
  stop(): Promise<void>;
}

export async function startDelayProxy(targetPort: number, oneWayMs: number): Promise<DelayProxy> {
  const sockets = new Set<Socket>();
  const track = (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.setNoDelay(true);
  };
  // Chunks keep their order: each is written after the same delay, from one timer queue.
  const forward = (from: Socket, to: Socket) => {
    from.on('data', (c: Buffer) => setTimeout(() => to.write(c), oneWayMs));
    from.on('end', () => setTimeout(() => to.end(), oneWayMs));
    from.on('error', () => to.destroy());
  };
  const server = createServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1');
    track(client);
    track(upstream);
    forward(client, upstream);
    forward(upstream, client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as { port: number }).port,
    stop: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
