// `postern queue list | show ID | retry [ID] | delete ID | bounce ID` (CONTRACT.md): the
// outbound queue. `list` and `show` read the spool files (spool.ts) and the maildrop directly.
// `retry`, `delete` and `bounce` go to the running daemon through its control channel
// (queue/control.ts) and wait for its answer; with no daemon running they act on the files:
// retry makes deferred recipients due at the next start, delete removes the entry, bounce marks
// its open recipients failed so the next start sends the DSN.
//
// Config keys read: `data_dir`.
import { readdir } from 'node:fs/promises';
import { loadConfig } from '../config/load.js';
import { Spool } from '../queue/spool.js';
import { isQueueId } from '../queue/queue-id.js';
import { maildropDirs } from '../queue/maildrop.js';
import { daemonPid, sendControl, type ControlRequest } from '../queue/control.js';
import type { EntryState } from '../queue/manager.js';
import { headerSection } from '../queue/dsn.js';
import { EXIT, say, usageError, type CliIo } from './io.js';

export const QUEUE_USAGE = `Usage: postern queue list [--config FILE]
       postern queue show ID [--config FILE]
       postern queue retry [ID] [--config FILE]
       postern queue delete ID [--config FILE]
       postern queue bounce ID [--config FILE]

list: one line per queued message: id, arrival time, size, sender, then one line per recipient
with its status (pending, deferred with the next attempt and last reply, held, done, failed).
show: the envelope, every recipient's state, and the message header.
retry: attempt deferred deliveries now. delete: remove without notice. bounce: give up and send
the sender a DSN. These three talk to the running daemon, or act on the spool when none runs.`;

export async function runQueueCommand(argv: string[], io: CliIo): Promise<number> {
  if (argv[0] === '--help' || argv[0] === '-h' || argv.length === 0) {
    say(argv.length === 0 ? io.stderr : io.stdout, QUEUE_USAGE);
    return argv.length === 0 ? EXIT.usage : EXIT.ok;
  }
  const args: string[] = [];
  let configFile: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--config' || argv[i] === '-c') configFile = argv[++i];
    else if (argv[i]!.startsWith('--config=')) configFile = argv[i]!.slice(9);
    else args.push(argv[i]!);
  }
  const [sub, id, ...extra] = args;
  if (extra.length) return usageError(io, 'queue', `unexpected argument ${extra[0]}`);
  const needsId = sub === 'show' || sub === 'delete' || sub === 'bounce';
  if (!['list', 'show', 'retry', 'delete', 'bounce'].includes(sub ?? '')) return usageError(io, 'queue', `unknown subcommand '${sub}'`);
  if (needsId && !id) return usageError(io, 'queue', `${sub} needs a queue id`);
  if (sub === 'list' && id) return usageError(io, 'queue', 'list takes no id');
  if (id && !isQueueId(id)) return usageError(io, 'queue', `not a queue id: ${id}`);
  const config = loadConfig(configFile, io.env);
  const spool = new Spool(config.data_dir);

  if (sub === 'list') {
    const ids = await listIds(spool);
    for (const q of ids) {
      const e = await readEntry(spool, q);
      if (!e) continue;
      say(io.stdout, `${q}  ${new Date(e.envelope.receivedAt).toISOString()}  ${e.size}  <${e.envelope.mailFrom}>`);
      for (const line of recipientLines(e)) say(io.stdout, `    ${line}`);
    }
    const dropped = await readdir(maildropDirs(config.data_dir).new).catch(() => [] as string[]);
    for (const d of dropped.filter(isQueueId)) say(io.stdout, `${d}  (maildrop, not yet picked up)`);
    if (ids.length === 0 && dropped.length === 0) say(io.stdout, 'queue is empty');
    return EXIT.ok;
  }
  if (sub === 'show') {
    const e = await readEntry(spool, id!, true);
    if (!e) {
      say(io.stderr, `postern queue: no queued message ${id}`);
      return EXIT.failed;
    }
    const env = e.envelope;
    say(io.stdout, `id: ${id}`);
    say(io.stdout, `arrived: ${new Date(env.receivedAt).toISOString()}`);
    say(io.stdout, `size: ${e.size}`);
    say(io.stdout, `sender: <${env.mailFrom}>`);
    say(io.stdout, `source: ${env.source.listener} ${env.source.remoteAddress}${env.source.helo ? ` (${env.source.helo})` : ''}`);
    // A message a content filter handed back, naming its original client with XFORWARD.
    const fwd = env.source.forwarded;
    if (fwd) say(io.stdout, `forwarded for: ${fwd.address ?? 'unknown'}${fwd.helo ? ` (${fwd.helo})` : ''}${fwd.ident ? ` ident ${fwd.ident}` : ''}`);
    if (env.envid) say(io.stdout, `envid: ${env.envid}`);
    if (env.ret) say(io.stdout, `ret: ${env.ret}`);
    say(io.stdout, 'recipients:');
    for (const line of recipientLines(e)) say(io.stdout, `  ${line}`);
    say(io.stdout, '');
    io.stdout.write(headerSection(e.message!).toString('latin1').replace(/\r\n/g, '\n'));
    return EXIT.ok;
  }

  const req: ControlRequest = sub === 'retry' ? { op: 'retry', ...(id ? { id } : {}) } : { op: sub as 'delete' | 'bounce', id: id! };
  if (await daemonPid(config.data_dir)) {
    const res = await sendControl(config.data_dir, req);
    if (!res.ok) {
      say(io.stderr, `postern queue: ${res.error}`);
      return EXIT.failed;
    }
    say(io.stdout, sub === 'retry' ? `retrying ${res.count ?? 0} message(s)` : `${sub === 'delete' ? 'deleted' : 'bounced'} ${id}`);
    return EXIT.ok;
  }
  // No daemon: act on the files; the next start carries on from them.
  await spool.init();
  const ids = id ? [id] : await listIds(spool);
  let n = 0;
  for (const q of ids) {
    const e = await readEntry(spool, q);
    if (!e) continue;
    if (sub === 'delete') {
      await spool.remove(q, { durable: true });
      n++;
      continue;
    }
    if (!e.state) {
      if (sub === 'retry') n++; // never tried: due at start anyway
      else {
        say(io.stderr, 'postern queue: this message has not been tried yet; start the daemon to bounce it');
        await spool.close();
        return EXIT.failed;
      }
      continue;
    }
    for (const t of e.state.targets) {
      if (t.status === 'done' || t.status === 'failed') continue;
      if (sub === 'retry') t.next = 0;
      else {
        t.status = 'failed';
        t.enhanced = '5.0.0';
        t.last = 'bounced by the administrator';
        t.at = Date.now();
      }
    }
    await spool.writeState(q, e.state);
    n++;
  }
  await spool.close();
  if (id && n === 0) {
    say(io.stderr, `postern queue: no queued message ${id}`);
    return EXIT.failed;
  }
  const done =
    sub === 'retry' ? `${n} message(s) due at the next start` : sub === 'delete' ? `deleted ${id}` : `bounced ${id}; the DSN goes out at the next start`;
  say(io.stdout, `${done} (no daemon running)`);
  return EXIT.ok;
}

async function listIds(spool: Spool): Promise<string[]> {
  return (await readdir(spool.queueDir).catch(() => [] as string[])).filter(isQueueId).sort();
}

async function readEntry(spool: Spool, id: string, withMessage = false) {
  try {
    const { envelope, message } = await spool.read(id);
    const state = await spool.readState<EntryState>(id);
    return { envelope, state, size: message.length, message: withMessage ? message : null };
  } catch {
    return null;
  }
}

function recipientLines(e: { envelope: { recipients: { address: string }[] }; state: EntryState | null }): string[] {
  if (!e.state) return e.envelope.recipients.map((r) => `${r.address}  pending`);
  return e.state.targets.map((t) => {
    const who = t.kind === 'remote' ? t.address : t.user === t.rcpt || !t.user ? t.rcpt : `${t.rcpt} (${t.user})`;
    const next = t.status === 'deferred' && t.next ? `  next ${new Date(t.next).toISOString()}` : '';
    const last = t.last && t.status !== 'done' ? `  ${t.last}` : '';
    return `${who}  ${t.status}${next}${last}`;
  });
}
