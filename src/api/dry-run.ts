// The dry-run behind POST /v1/test: one SMTP transaction played through the daemon's own plugin
// chain and the SMTP core's relay policy, as src/smtp/session.ts plays it, but nothing is queued,
// delivered or stored (the message exists only in memory). Stages in protocol order:
//   connect → helo → [auth: the given user is taken as authenticated; no password is checked]
//   → mail → rcpt (per recipient: the chain, then the core: unknown local user 550 5.1.1,
//   foreign without trust/auth/route/plugin accept 554 5.7.1) → data → queue.
// A refusal at connect, helo or mail refuses every recipient with that reply. Each recipient's
// outcome says what the client would hear and, when accepted, where the message would go.
// Plugins run for real: side effects of their own (a greylist entry, a Sieve duplicate mark) can
// happen, as with a real transaction that is refused after DATA.
import { randomBytes } from 'node:crypto';
import type { Config } from '../config/load.js';
import type { Directory } from '../directory/directory.js';
import type { Pipeline, StageResult, TraceEntry } from '../pipeline/types.js';
import type { SessionInfo, Stage, TransactionInfo } from '../pipeline/plugin.js';
import type { Verdict } from '../pipeline/verdict.js';
import type { Envelope, EnvelopeRecipient } from '../queue/envelope.js';
import { createMessage } from '../pipeline/message.js';
import { parseAddress } from '../address/address.js';
import { inRanges, parseRange } from '../address/cidr.js';
import type { RouteTable } from '../delivery/routes.js';
import { LiveRoutes, withoutCredentials } from '../policy/routes.js';
import type { Store } from '../store/store.js';
import { classMatches, Replies, replyFromVerdict, SmtpReply, type EnhancedCode } from '../smtp/replies.js';
import { applyReroute } from '../smtp/session.js';

export interface DryRunInput {
  envelope: { client: string; helo: string; from: string; to: string[]; auth: string | null };
  message: string;
}

export type Delivery = { kind: 'local'; user: string; folders: string[] } | { kind: 'route'; nexthop: string } | { kind: 'mx'; domain: string } | { kind: 'alias'; targets: string[] };

export interface RecipientResult {
  address: string;
  outcome: 'accepted' | 'rejected' | 'tempfail' | 'discarded';
  reply: string;
  delivery?: Delivery;
}

export interface DryRunResult {
  recipients: RecipientResult[];
  trace: TraceEntry[];
}

export async function dryRun(input: DryRunInput, deps: { config: Config; pipeline: Pipeline; directory: Directory; store?: Store }): Promise<DryRunResult> {
  const { config, pipeline, directory } = deps;
  // The config's routes and the store's, as the SMTP front end and the router see them now.
  const routes = await new LiveRoutes(config.routes, deps.store).table();
  const env = input.envelope;
  const trace: TraceEntry[] = [];
  const id = `DRYRUN${randomBytes(5).toString('hex').toUpperCase()}`;
  const session: SessionInfo = {
    id: `dry-${id}`,
    listener: 'smtp',
    remoteAddress: env.client,
    remotePort: 0,
    localAddress: '127.0.0.1',
    localPort: 0,
    helo: env.helo.toLowerCase(),
    secure: false,
    relaying: inRanges(env.client, config.relay.networks.map(parseRange)),
    // Not traffic: no Prometheus metric (the runner's or a plugin's) counts a dry-run.
    dryRun: true,
  };
  const notes = new Map<string, Record<string, unknown>>();
  const everyone = (reply: SmtpReply): DryRunResult => ({
    recipients: env.to.map((address) => ({ address, outcome: reply.code >= 500 ? 'rejected' : 'tempfail', reply: reply.toString() })),
    trace,
  });
  const run = async (stage: Stage, extra: Partial<Parameters<Pipeline['run']>[1]> = {}): Promise<StageResult> => {
    const r = await pipeline.run(stage, { session, notes, ...extra });
    trace.push(...r.trace);
    return r;
  };

  // connect: RFC 5321 §3.1, 554 (or 421) instead of the greeting.
  let v = (await run('connect')).verdict;
  if (v.kind === 'reject') return everyone(new SmtpReply(554, classMatches(554, v.enhanced) ? (v.enhanced as EnhancedCode) : '5.7.1', replyFromVerdict(v).text));
  if (v.kind === 'tempfail') return everyone(new SmtpReply(421, classMatches(421, v.enhanced) ? (v.enhanced as EnhancedCode) : '4.3.0', replyFromVerdict(v).text));
  v = (await run('helo')).verdict;
  if (v.kind === 'reject' || v.kind === 'tempfail') return everyone(replyFromVerdict(v));
  if (env.auth) {
    session.authUser = env.auth;
    session.relaying = true;
    trace.push({ stage: 'auth', plugin: 'core', verdict: 'accept', ms: 0, detail: `authenticated as ${env.auth} (dry-run: no password check)` });
  }

  let mailFrom = '';
  if (env.from) {
    try {
      mailFrom = parseAddress(env.from).address;
    } catch {
      return everyone(Replies.senderSyntax());
    }
  }
  const envelope: Envelope = {
    mailFrom,
    recipients: [],
    source: { listener: 'smtp', remoteAddress: env.client, remotePort: 0, helo: session.helo, ...(session.authUser ? { authUser: session.authUser } : {}), protocol: 'ESMTP' },
    receivedAt: Date.now(),
  };
  const accepted: EnvelopeRecipient[] = [];
  const tx = (): TransactionInfo => ({ id, mailFrom, recipients: [...accepted], envelope });
  v = (await run('mail', { tx: tx() })).verdict;
  if (v.kind === 'reject' || v.kind === 'tempfail') return everyone(replyFromVerdict(v));

  const results = new Map<string, RecipientResult>();
  for (const given of env.to) {
    const refuse = (reply: SmtpReply) => results.set(given, { address: given, outcome: reply.code >= 500 ? 'rejected' : 'tempfail', reply: reply.toString() });
    let parsed;
    try {
      parsed = parseAddress(given);
    } catch {
      refuse(Replies.recipientSyntax());
      continue;
    }
    const rcpt: EnvelopeRecipient = { address: parsed.address };
    const r = await run('rcpt', { tx: tx(), rcpt });
    if (r.verdict.kind === 'reject' || r.verdict.kind === 'tempfail') {
      refuse(replyFromVerdict(r.verdict));
      continue;
    }
    const tricky = parsed.tricks.length > 0;
    if (!tricky && directory.isLocalDomain(parsed.domain)) {
      if ((await directory.resolve(parsed.address)).kind === 'unknown') {
        refuse(Replies.userUnknown());
        continue;
      }
    } else if (!(session.relaying || r.verdict.kind === 'accept' || (!tricky && routes.has(parsed.domain)))) {
      refuse(Replies.relayDenied());
      continue;
    }
    accepted.push(rcpt);
  }
  const finish = (): DryRunResult => ({ recipients: env.to.map((a) => results.get(a)!), trace });
  if (accepted.length === 0) return finish();

  envelope.recipients = accepted;
  const body = input.message.replace(/\r?\n/g, '\r\n');
  const received = `Received: from ${session.helo} ([${env.client}]) by ${config.hostname} with ESMTP id ${id}; ${new Date().toUTCString()}\r\n`;
  const message = createMessage(Buffer.from(received + body, 'utf8'));
  let folder: string | undefined;
  let reroute: Extract<Verdict, { kind: 'reroute' }> | undefined;
  const acceptedNames = new Map(accepted.map((r) => [r.address, env.to.find((g) => results.get(g) === undefined && safeAddress(g) === r.address) ?? r.address]));
  const each = (f: (given: string, r: EnvelopeRecipient) => RecipientResult) => {
    for (const r of accepted) results.set(acceptedNames.get(r.address)!, f(acceptedNames.get(r.address)!, r));
  };
  for (const stage of ['data', 'queue'] as const) {
    const sv = (await run(stage, { tx: tx(), message })).verdict;
    if (sv.kind === 'reject' || sv.kind === 'tempfail') {
      const reply = replyFromVerdict(sv).toString();
      each((address) => ({ address, outcome: sv.kind === 'reject' ? 'rejected' : 'tempfail', reply }));
      return finish();
    }
    if (sv.kind === 'discard') {
      each((address) => ({ address, outcome: 'discarded', reply: Replies.queued(id).toString() }));
      return finish();
    }
    if (sv.kind === 'quarantine') folder = sv.folder;
    if (sv.kind === 'reroute') reroute = sv;
  }
  const planned = reroute ? applyReroute(accepted.map((r) => ({ ...r })), reroute).recipients : accepted.map((r) => ({ ...r, ...(folder ? { folder } : {}) }));
  const byAddress = new Map(planned.map((r) => [r.address.toLowerCase(), r]));
  for (const r of accepted) {
    const given = acceptedNames.get(r.address)!;
    const p = byAddress.get(r.address.toLowerCase());
    if (!p) results.set(given, { address: given, outcome: 'discarded', reply: Replies.queued(id).toString() });
    else results.set(given, { address: given, outcome: 'accepted', reply: Replies.queued(id).toString(), delivery: await whereTo(p, directory, routes) });
  }
  return finish();
}

function safeAddress(a: string): string | null {
  try {
    return parseAddress(a).address;
  } catch {
    return null;
  }
}

async function whereTo(r: EnvelopeRecipient, directory: Directory, routes: RouteTable): Promise<Delivery> {
  const at = r.address.lastIndexOf('@');
  const domain = r.address.slice(at + 1);
  if (directory.isLocalDomain(domain)) {
    const res = await directory.resolve(r.address);
    const folders = r.folders ?? [r.folder ?? 'INBOX'];
    if (res.kind === 'local') return { kind: 'local', user: res.user, folders };
    if (res.kind === 'alias') return { kind: 'alias', targets: res.targets };
  }
  const route = routes.find(domain);
  if (route) return { kind: 'route', nexthop: withoutCredentials(typeof route.route === 'string' ? route.route : (route.route as { nexthop: string }).nexthop) };
  return { kind: 'mx', domain };
}
