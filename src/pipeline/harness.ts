// A test harness for plugin authors: runs one plugin through the real runner (runner.ts) with its
// options validated exactly as the loader does, a real in-memory Store (store/memory.ts), a
// Directory (a small fake by default, or your own partial one), and a Resolver (pointed at the
// DNS servers you give, e.g. test/helpers/dns-server.ts; without any, every query fails with
// DnsError ENOTCONFIGURED so no test reaches the real network by accident).
//
//   const h = testPlugin(myPlugin, { zones: ['bl.test'] }, { dnsServers: [dns.server] });
//   const r = await h.run('connect', { session: { remoteAddress: '192.0.2.1' } });
//   assert.equal(r.verdict.kind, 'reject');
//   await h.close();
//
// The session and the notes map persist between run() calls, as on one SMTP connection
// (connect, then rcpt); `newConnection()` starts over. init runs on the first run(), after the
// plugin's `checkFiles` (a ConfigError with the problems, as the loader throws).
//
// Mail a content filter hands back with XFORWARD: `forwarded` names its original client
// (session.forwarded, src/pipeline/origin.ts) while the session stays the filter's, and
// `forwarded: null` ends it again, as RSET or the end of DATA do:
//
//   await h.run('data', { session: { remoteAddress: '127.0.0.1' }, forwarded: { address: '192.0.2.9', helo: 'client.test' }, message });
// Config keys read: none from a file; `global` is parsed with the real config schema.
import type { Logger } from 'pino';
import type { Config } from '../config/load.js';
import { fromObject } from '../config/load.js';
import type { ConfigInput } from '../config/schema.js';
import { ConfigError } from '../config/errors.js';
import type { Directory, Resolution, User } from '../directory/directory.js';
import { createResolver, DnsError, type Resolver } from '../dns/resolver.js';
import { silentLogger } from '../log/logger.js';
import type { EnvelopeRecipient } from '../queue/envelope.js';
import { MemoryStore } from '../store/memory.js';
import type { Store } from '../store/store.js';
import { createMessage, type Message } from './message.js';
import type { AuthAttempt, DeliveryEvent, ForwardedClientInfo, ObserverStage, PluginDefinition, SessionInfo, Stage, TransactionInfo } from './plugin.js';
import { checkFiles, validateOptions } from './loader.js';
import { createPipeline, type AnyPluginDefinition } from './runner.js';
import type { Pipeline, StageResult } from './types.js';
import type { z } from 'zod';

export interface HarnessOptions {
  /** Global config (as in a config file) for init's `global`; defaults plus these keys. */
  global?: ConfigInput;
  /** A Store to use instead of a fresh MemoryStore (the harness then does not close it). */
  store?: Store;
  /** Directory methods to use; the rest come from fakeDirectory(). */
  directory?: Partial<Directory>;
  /** Users for the default fake directory: address → password. */
  users?: Record<string, string>;
  /** A Resolver to use; or DNS servers ("127.0.0.1:port") for a real one. */
  dns?: Resolver;
  dnsServers?: string[];
  /** Per-query DNS timeout for the real resolver (ms); default 1000, one try. */
  dnsTimeoutMs?: number;
  log?: Logger;
}

export interface RunInput {
  session?: Partial<SessionInfo>;
  /**
   * The client a trusted peer named with XFORWARD for this transaction (session.forwarded); kept
   * for later runs like the rest of the session, until `null` removes it (RSET, end of DATA).
   */
  forwarded?: ForwardedClientInfo | null;
  tx?: Partial<TransactionInfo>;
  rcpt?: string | EnvelopeRecipient;
  auth?: Partial<AuthAttempt> & { username: string; password: string };
  /** A string has its line ends turned into CRLF; a Buffer is used as is. */
  message?: string | Buffer | Message;
  signal?: AbortSignal;
}

export interface PluginHarness {
  run(stage: Stage, input?: RunInput): Promise<StageResult & { message?: Message }>;
  observe(stage: ObserverStage, ev: DeliveryEvent): Promise<void>;
  /** The connection's session as plugins changed it (relaying, authUser). */
  readonly session: SessionInfo;
  /** Per-plugin notes of the current connection. */
  readonly notes: Map<string, Record<string, unknown>>;
  newConnection(session?: Partial<SessionInfo>): void;
  readonly store: Store;
  readonly directory: Directory;
  readonly dns: Resolver;
  readonly global: Config;
  close(): Promise<void>;
}

export const DEFAULT_TEST_SESSION: SessionInfo = {
  id: 'test-session',
  listener: 'smtp',
  remoteAddress: '192.0.2.1',
  remotePort: 40000,
  localAddress: '127.0.0.1',
  localPort: 25,
  secure: false,
  relaying: false,
};

export function testPlugin<Schema extends z.ZodType, S>(def: PluginDefinition<Schema, S>, options: Record<string, unknown> = {}, opts: HarnessOptions = {}): PluginHarness {
  const anyDef = def as unknown as AnyPluginDefinition;
  const checked = validateOptions(anyDef, options, [def.name]);
  if (!checked.ok) throw new ConfigError(checked.problems);
  const global = fromObject({ domains: { local: ['example.test'] }, ...opts.global }, null);
  const store = opts.store ?? new MemoryStore();
  const directory: Directory = { ...fakeDirectory({ localDomains: global.domains.local, users: opts.users }), ...opts.directory };
  const dns = opts.dns ?? (opts.dnsServers?.length ? createResolver({ servers: opts.dnsServers, timeout: opts.dnsTimeoutMs ?? 1000, tries: 1 }) : unconfiguredResolver());
  const log = opts.log ?? silentLogger();
  let session: SessionInfo = { ...DEFAULT_TEST_SESSION };
  let notes = new Map<string, Record<string, unknown>>();
  let pipeline: Promise<Pipeline> | null = null;

  const ready = () =>
    (pipeline ??= (async () => {
      const problems = await checkFiles(anyDef, checked.value.config, global, [def.name]);
      if (problems.length) throw new ConfigError(problems);
      const state = anyDef.init ? await anyDef.init({ config: checked.value.config, store, directory, dns, log: log.child({ plugin: def.name }), global }) : undefined;
      return createPipeline([{ name: def.name, def: anyDef, state, ...checked.value }], { store, directory, dns, log });
    })());

  return {
    async run(stage, input = {}) {
      const p = await ready();
      if (input.session) Object.assign(session, input.session);
      if (input.forwarded === null) delete session.forwarded;
      else if (input.forwarded) session.forwarded = { ...input.forwarded };
      const message = input.message === undefined ? undefined : toMessage(input.message);
      const rcpt = typeof input.rcpt === 'string' ? { address: input.rcpt } : input.rcpt;
      const tx = input.tx || stage === 'mail' || stage === 'rcpt' || stage === 'data' || stage === 'queue' ? makeTx(input.tx, session, rcpt) : undefined;
      const auth = input.auth ? { method: 'PLAIN', ...input.auth } : undefined;
      const r = await p.run(stage, { session, tx, rcpt, auth, message, notes, signal: input.signal });
      return message ? { ...r, message } : r;
    },
    async observe(stage, ev) {
      await (await ready()).observe(stage, ev);
    },
    get session() {
      return session;
    },
    get notes() {
      return notes;
    },
    newConnection(s = {}) {
      session = { ...DEFAULT_TEST_SESSION, ...s };
      notes = new Map();
    },
    store,
    directory,
    dns,
    global,
    async close() {
      // A chain whose init failed has nothing to close; the test already saw that error.
      const p = pipeline ? await pipeline.catch(() => null) : null;
      if (p) await p.close();
      if (!opts.store) await store.close();
    },
  };
}

function toMessage(m: string | Buffer | Message): Message {
  if (typeof m === 'string') return createMessage(Buffer.from(m.replace(/\r?\n/g, '\r\n'), 'utf8'));
  if (Buffer.isBuffer(m)) return createMessage(m);
  return m;
}

function makeTx(partial: Partial<TransactionInfo> | undefined, session: SessionInfo, rcpt: EnvelopeRecipient | undefined): TransactionInfo {
  const mailFrom = partial?.mailFrom ?? 'sender@sender.test';
  const recipients = partial?.recipients ?? (rcpt ? [] : [{ address: 'rcpt@example.test' }]);
  return {
    id: partial?.id ?? 'TESTQUEUEID',
    mailFrom,
    recipients,
    envelope: partial?.envelope ?? {
      mailFrom,
      recipients,
      source: {
        listener: session.listener,
        remoteAddress: session.remoteAddress,
        remotePort: session.remotePort,
        ...(session.clientHostname ? { clientHostname: session.clientHostname } : {}),
        helo: session.helo,
        authUser: session.authUser,
        protocol: 'ESMTP',
        ...(session.forwarded ? { forwarded: { ...session.forwarded } } : {}),
      },
      receivedAt: Date.now(),
    },
  };
}

/**
 * A Directory good enough for plugin tests: users with plain passwords, local domains, resolve
 * by exact address. Methods that change users work in memory.
 */
export function fakeDirectory(opts: { localDomains?: string[]; users?: Record<string, string> } = {}): Directory {
  const domains = new Set((opts.localDomains ?? ['example.test']).map((d) => d.toLowerCase()));
  const users = new Map<string, { password: string; createdAt: number }>();
  const canon = (a: string) => {
    const at = a.lastIndexOf('@');
    return at < 0 ? a : `${a.slice(0, at)}@${a.slice(at + 1).toLowerCase()}`;
  };
  for (const [a, p] of Object.entries(opts.users ?? {})) users.set(canon(a), { password: p, createdAt: 0 });
  const isLocalDomain = (d: string) => domains.has(d.toLowerCase().replace(/\.$/, ''));
  const toUser = (address: string): User | null => (users.has(address) ? { address, createdAt: users.get(address)!.createdAt } : null);
  return {
    isLocalDomain,
    async resolve(address): Promise<Resolution> {
      const a = canon(address);
      if (!isLocalDomain(a.slice(a.lastIndexOf('@') + 1))) return { kind: 'foreign' };
      return users.has(a) ? { kind: 'local', user: a } : { kind: 'unknown' };
    },
    async expand(address) {
      const a = canon(address);
      if (users.has(a)) return { local: [{ user: a, address: a }], remote: [] };
      return isLocalDomain(a.slice(a.lastIndexOf('@') + 1)) ? null : { local: [], remote: [a] };
    },
    async authenticate(username, password) {
      const u = users.get(canon(username));
      return u && u.password === password ? canon(username) : null;
    },
    getUser: async (a) => toUser(canon(a)),
    listUsers: async () => [...users.keys()].map((a) => toUser(a)!),
    async addUser(address, password = '') {
      users.set(canon(address), { password, createdAt: Date.now() });
      return toUser(canon(address))!;
    },
    async setPassword(address, password) {
      const u = users.get(canon(address));
      if (!u) throw new Error(`no such user: ${address}`);
      u.password = password;
    },
    deleteUser: async (a) => users.delete(canon(a)),
    setAlias: async () => {
      throw new Error('fakeDirectory: aliases are not supported; pass directory.setAlias');
    },
    deleteAlias: async () => false,
    setCatchAll: async () => {
      throw new Error('fakeDirectory: catch-all is not supported; pass directory.setCatchAll');
    },
  };
}

/** A Resolver that fails every query, for tests that must not touch DNS. */
export function unconfiguredResolver(): Resolver {
  const fail = async (name: string): Promise<never> => {
    throw new DnsError(name, 'ENOTCONFIGURED');
  };
  return { resolve4: fail, resolve6: fail, resolveTxt: fail, resolveMx: fail, reverse: fail };
}
