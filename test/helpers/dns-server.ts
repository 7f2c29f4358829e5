// A tiny authoritative DNS server for tests (RFC 1035 messages via dns-packet), on 127.0.0.1 and
// a free port, over UDP and TCP on the same port number (RFC 1035 §4.2.2 two-byte length frames;
// TCP is bound best-effort). Point a Resolver at `${address}:${port}`.
//
// Names are matched case-insensitively without the trailing dot. A known name with no record of
// the asked type answers NOERROR with no answers (NODATA); an unknown name answers NXDOMAIN.
// `behaviour` lets a test delay, drop (never answer) or SERVFAIL chosen queries, for timeout tests.
// Every question asked is appended to `queries`, which cache tests read.
import { createSocket, type RemoteInfo } from 'node:dgram';
import { createServer, type Server, type Socket } from 'node:net';
import * as dnsPacket from 'dns-packet';

export interface DnsRecords {
  A?: string[];
  AAAA?: string[];
  MX?: { exchange: string; priority: number }[];
  TXT?: string[];
  PTR?: string[];
  CNAME?: string[];
}

export type DnsBehaviour = 'answer' | 'drop' | 'servfail' | { delayMs: number };

export interface DnsServerOptions {
  records?: Record<string, DnsRecords>;
  /** Decides per question; default: answer at once. */
  behaviour?: (name: string, type: string) => DnsBehaviour;
  /** TTL given on every answer, seconds. */
  ttl?: number;
}

export interface RunningDnsServer {
  port: number;
  address: string;
  /** "127.0.0.1:port", ready for dns.servers / createResolver. */
  server: string;
  /** Every question in arrival order: name (lower-case, no trailing dot) and type. */
  queries: { name: string; type: string; proto: 'udp' | 'tcp' }[];
  /** How many times `name` was asked (any type). */
  count(name: string): number;
  setRecords(records: Record<string, DnsRecords>): void;
  setBehaviour(fn: DnsServerOptions['behaviour']): void;
  stop(): Promise<void>;
}

const norm = (n: string) => n.toLowerCase().replace(/\.$/, '');

export async function startDnsServer(opts: DnsServerOptions = {}): Promise<RunningDnsServer> {
  let records = normalise(opts.records ?? {});
  let behaviour = opts.behaviour ?? (() => 'answer' as const);
  const ttl = opts.ttl ?? 60;
  const queries: RunningDnsServer['queries'] = [];
  const timers = new Set<NodeJS.Timeout>();
  let stopped = false;

  function answer(query: dnsPacket.DecodedPacket, proto: 'udp' | 'tcp'): { packet: dnsPacket.Packet; how: DnsBehaviour } | null {
    const q = query.questions?.[0];
    if (!q) return null;
    const name = norm(q.name);
    queries.push({ name, type: q.type, proto });
    const how = behaviour(name, q.type);
    const base = { type: 'response' as const, id: query.id, questions: query.questions, flags: dnsPacket.AUTHORITATIVE_ANSWER };
    if (how === 'drop') return { packet: base, how };
    if (how === 'servfail') return { packet: { ...base, flags: base.flags | 2 }, how };
    const rr = records.get(name);
    // RFC 1035 §4.1.1 RCODE 3: the name does not exist.
    if (!rr) return { packet: { ...base, flags: base.flags | 3 }, how };
    const answers: dnsPacket.Answer[] = [];
    const add = (type: string, data: unknown) => answers.push({ type, name: q.name, ttl, class: 'IN', data } as dnsPacket.Answer);
    switch (q.type) {
      case 'A':
        for (const a of rr.A ?? []) add('A', a);
        break;
      case 'AAAA':
        for (const a of rr.AAAA ?? []) add('AAAA', a);
        break;
      case 'MX':
        for (const m of rr.MX ?? []) add('MX', { exchange: m.exchange, preference: m.priority });
        break;
      case 'TXT':
        // TXT strings longer than 255 octets go out as several character-strings (RFC 1035 §3.3.14).
        for (const t of rr.TXT ?? []) add('TXT', chunk(t));
        break;
      case 'PTR':
        for (const p of rr.PTR ?? []) add('PTR', p);
        break;
      case 'CNAME':
        for (const c of rr.CNAME ?? []) add('CNAME', c);
        break;
    }
    return { packet: { ...base, answers }, how };
  }

  function later(how: DnsBehaviour, send: () => void): void {
    if (how === 'drop' || stopped) return;
    if (typeof how === 'object' && how.delayMs > 0) {
      const t = setTimeout(() => {
        timers.delete(t);
        if (!stopped) send();
      }, how.delayMs);
      timers.add(t);
      return;
    }
    send();
  }

  const udp = createSocket('udp4');
  udp.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
    let query: dnsPacket.DecodedPacket;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return;
    }
    const r = answer(query, 'udp');
    if (r) later(r.how, () => udp.send(dnsPacket.encode(r.packet), rinfo.port, rinfo.address));
  });
  await new Promise<void>((res, rej) => {
    udp.once('error', rej);
    udp.bind(0, '127.0.0.1', () => {
      udp.off('error', rej);
      res();
    });
  });
  const port = udp.address().port;

  const sockets = new Set<Socket>();
  let tcp: Server | null = createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => sock.destroy());
    let buf = Buffer.alloc(0);
    sock.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < len + 2) break;
        const msg = buf.subarray(2, len + 2);
        buf = buf.subarray(len + 2);
        let query: dnsPacket.DecodedPacket;
        try {
          query = dnsPacket.decode(msg);
        } catch {
          sock.destroy();
          return;
        }
        const r = answer(query, 'tcp');
        if (r) later(r.how, () => sock.writable && sock.write(dnsPacket.streamEncode(r.packet)));
      }
    });
  });
  try {
    await new Promise<void>((res, rej) => {
      tcp!.once('error', rej);
      tcp!.listen(port, '127.0.0.1', () => res());
    });
  } catch {
    tcp = null; // the TCP port was taken; UDP alone serves every test that does not truncate.
  }

  return {
    port,
    address: '127.0.0.1',
    server: `127.0.0.1:${port}`,
    queries,
    count: (name) => queries.filter((q) => q.name === norm(name)).length,
    setRecords(r) {
      records = normalise(r);
    },
    setBehaviour(fn) {
      behaviour = fn ?? (() => 'answer' as const);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const s of sockets) s.destroy();
      await Promise.all([
        new Promise<void>((r) => udp.close(() => r())),
        tcp ? new Promise<void>((r) => tcp!.close(() => r())) : Promise.resolve(),
      ]);
    },
  };
}

function normalise(r: Record<string, DnsRecords>): Map<string, DnsRecords> {
  return new Map(Object.entries(r).map(([k, v]) => [norm(k), v]));
}

function chunk(s: string): Buffer[] {
  const b = Buffer.from(s, 'utf8');
  const out: Buffer[] = [];
  for (let i = 0; i < b.length; i += 255) out.push(b.subarray(i, i + 255));
  return out.length ? out : [Buffer.alloc(0)];
}
