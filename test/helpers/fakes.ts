// In-memory fakes of the Pipeline, Directory and MessageQueue contracts, a minimal createMessage,
// and a harness that starts SMTP listeners on port 0 for protocol tests.
import { silentLogger } from '../../src/log/logger.js';
import { fromObject, type Config } from '../../src/config/load.js';
import type { HeaderEditor, Stage } from '../../src/pipeline/plugin.js';
import type { Pipeline, StageInput, StageResult } from '../../src/pipeline/types.js';
import type { Verdict } from '../../src/pipeline/verdict.js';
import type { Directory, Resolution } from '../../src/directory/directory.js';
import type { Envelope } from '../../src/queue/envelope.js';
import type { MessageQueue, RecipientOutcome } from '../../src/queue/queue.js';
import { parseAddress } from '../../src/address/address.js';
import { createSmtpListener, type SmtpListener, type SmtpListenerDeps, type SmtpListenerName } from '../../src/smtp/server.js';
import { ConnectionCounter, type CreatedMessage } from '../../src/smtp/session.js';
import type { EtrnQueue } from '../../src/smtp/etrn.js';
import type { RouteSource } from '../../src/policy/routes.js';
import type { Logger } from 'pino';
import { testTls } from './tls.js';

export type FakeHook = (input: StageInput) => Verdict | Promise<Verdict>;

export class FakePipeline implements Pipeline {
  readonly names = ['fake'];
  hooks: Partial<Record<Stage, FakeHook>> = {};
  /** Every stage run, in order, with what it saw. */
  calls: { stage: Stage; input: StageInput }[] = [];
  has(stage: Stage): boolean {
    return !!this.hooks[stage];
  }
  async run(stage: Stage, input: StageInput): Promise<StageResult> {
    this.calls.push({ stage, input });
    const hook = this.hooks[stage];
    if (!hook) return { verdict: { kind: 'next' }, trace: [] };
    const t0 = Date.now();
    const verdict = await hook(input);
    return { verdict, trace: [{ stage, plugin: 'fake', verdict: verdict.kind, ms: Date.now() - t0 }] };
  }
  async observe(): Promise<void> {}
  async close(): Promise<void> {}
}

export class FakeDirectory implements Partial<Directory> {
  constructor(
    readonly domains: string[] = ['example.test'],
    readonly users: Map<string, string> = new Map([['alice@example.test', 'secret']]),
  ) {}
  isLocalDomain(domain: string): boolean {
    return this.domains.includes(domain.toLowerCase());
  }
  async resolve(address: string): Promise<Resolution> {
    const p = parseAddress(address);
    if (!this.isLocalDomain(p.domain)) return { kind: 'foreign' };
    const local = p.local.split('+')[0]!.toLowerCase();
    const user = `${local}@${p.domain}`;
    return this.users.has(user) || local === 'postmaster' ? { kind: 'local', user } : { kind: 'unknown' };
  }
  async authenticate(username: string, password: string): Promise<string | null> {
    return this.users.get(username.toLowerCase()) === password ? username.toLowerCase() : null;
  }
}

export interface Accepted {
  id: string;
  envelope: Envelope;
  message: Buffer;
}

export class FakeQueue implements MessageQueue {
  private n = 0;
  accepted: Accepted[] = [];
  delivered: Accepted[] = [];
  failAccept = false;
  /** LMTP outcome per recipient address; default delivered. */
  lmtpOutcome: (address: string) => Omit<RecipientOutcome, 'recipient'> = () => ({ status: 'delivered', code: 250, enhanced: '2.0.0', text: 'Ok delivered' });
  newId(): string {
    return `Q${String(++this.n).padStart(6, '0')}`;
  }
  async accept(id: string, envelope: Envelope, message: Buffer): Promise<void> {
    if (this.failAccept) throw new Error('disk full');
    this.accepted.push({ id, envelope: structuredClone(envelope), message });
  }
  async acceptAll(copies: Accepted[]): Promise<void> {
    for (const c of copies) await this.accept(c.id, c.envelope, c.message);
  }
  async deliverNow(id: string, envelope: Envelope, message: Buffer): Promise<RecipientOutcome[]> {
    this.delivered.push({ id, envelope: structuredClone(envelope), message });
    return envelope.recipients.map((recipient) => ({ recipient, ...this.lmtpOutcome(recipient.address) }));
  }
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
}

/** A minimal MessageAccess: header list read once, edits added at the top on render. */
export function createTestMessage(raw: Buffer): CreatedMessage {
  const added: [string, string][] = [];
  const headEnd = raw.indexOf('\r\n\r\n');
  const head = (headEnd >= 0 ? raw.subarray(0, headEnd) : raw).toString('latin1');
  const list = (): [string, string][] => [
    ...added,
    ...head
      .replace(/\r\n[ \t]/g, ' ')
      .split('\r\n')
      .filter((l) => l.includes(':'))
      .map((l): [string, string] => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]),
  ];
  const headers: HeaderEditor = {
    list,
    get: (name) => list().filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v),
    add: (name, value) => void added.push([name, value]),
    remove: () => 0,
  };
  return {
    size: raw.length,
    headers,
    raw: async () => raw,
    parsed: async () => {
      throw new Error('not in the fake');
    },
    render: () => Buffer.concat([Buffer.from(added.map(([n, v]) => `${n}: ${v}\r\n`).join(''), 'latin1'), raw]),
  };
}

export interface Harness {
  config: Config;
  /** The fake chain (unused when a real one was passed as `chain`). */
  pipeline: FakePipeline;
  directory: FakeDirectory;
  queue: FakeQueue;
  log: Logger;
  ports: Partial<Record<SmtpListenerName, number>>;
  listeners: SmtpListener[];
  close(): Promise<void>;
}

/**
 * Starts the named listeners on 127.0.0.1, port 0, with the fakes. `config` is a config-file
 * object. `chain` is built from the parsed config instead of the fake pipeline when given (e.g.
 * with loadPipeline, for the real plugins); `etrn` turns ETRN on for the smtp listener.
 */
export async function startHarness(opts: { listeners?: SmtpListenerName[]; config?: Record<string, unknown>; log?: Logger; chain?: (config: Config) => Promise<Pipeline>; etrn?: EtrnQueue; routes?: (config: Config) => RouteSource } = {}): Promise<Harness> {
  const names = opts.listeners ?? ['smtp'];
  const listen = Object.fromEntries(names.map((n) => [n, { host: '127.0.0.1', port: 0 }]));
  const config = fromObject({ hostname: 'mx.example.test', domains: { local: ['example.test'] }, relay: { networks: [] }, plugins: [], listen, ...opts.config }, null);
  const pipeline = new FakePipeline();
  const directory = new FakeDirectory();
  const queue = new FakeQueue();
  const log = opts.log ?? silentLogger();
  const tls = await testTls();
  const chain = opts.chain ? await opts.chain(config) : pipeline;
  const deps: SmtpListenerDeps = { config, log, pipeline: chain, directory: directory as unknown as Directory, queue, tls, createMessage: createTestMessage, ...(opts.etrn ? { etrn: opts.etrn } : {}), ...(opts.routes ? { routes: opts.routes(config) } : {}) };
  const counter = new ConnectionCounter();
  const listeners = names.map((n) => createSmtpListener(deps, n, counter));
  const ports: Partial<Record<SmtpListenerName, number>> = {};
  for (const l of listeners) ports[l.name] = (await l.listen()).port;
  return {
    config,
    pipeline,
    directory,
    queue,
    log,
    ports,
    listeners,
    close: async () => {
      await Promise.all(listeners.map((l) => l.close()));
      if (chain !== pipeline) await chain.close();
    },
  };
}
