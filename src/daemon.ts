// The daemon: builds every part from the config and starts the listeners. Order matters:
//   logger → store → directory → resolver → plugin chain → outbound transport → control
//   channel → queue (spool recovery) → maildrop pickup → TLS → listeners → `daemon.ready` (logged with the real ports, which tests read).
// `stop()` closes in reverse: listeners first (no new mail), then the queue (waits for
// deliveries in progress), the chain, the store.
import { mkdir } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { Config } from './config/load.js';
import { createLogger, logEvent } from './log/logger.js';
import { openStore } from './store/open.js';
import { createDirectory } from './directory/index.js';
import { createResolver } from './dns/resolver.js';
import { loadPipeline } from './pipeline/loader.js';
import { createMessage } from './pipeline/message.js';
import { createMessageQueue } from './queue/manager.js';
import { LiveRoutes } from './policy/routes.js';
import { MaildropPickup } from './queue/maildrop.js';
import { ControlServer, type ControlRequest, type ControlResponse } from './queue/control.js';
import { Outbound } from './transport/outbound.js';
import { loadOrCreateTls } from './tls/certs.js';
import { createSmtpListeners } from './smtp/server.js';
import { RecipientVerifier } from './proxy/verify.js';
import { BackendPool } from './proxy/backend-pool.js';
import { createManageSieveListener } from './managesieve/server.js';
import { createApiListener } from './api/server.js';
import type { Store } from './store/store.js';

export interface RunningGateway {
  ports: Record<string, number>;
  log: Logger;
  stop(): Promise<void>;
}

/** Listeners the config may name that no server here answers yet. */
const UNSERVED_LISTENERS = ['imap', 'imaps', 'pop3', 'pop3s'] as const;

export async function startDaemon(config: Config, opts: { log?: Logger } = {}): Promise<RunningGateway> {
  const log = opts.log ?? createLogger(config.log.level);
  // Lifecycle lines (start, ready with the real ports, stop) are written whatever log.level says:
  // supervisors and tests wait for `daemon.ready`.
  const lifecycle = log.level === 'silent' ? log : log.child({}, { level: 'info' });
  lifecycle.info({ evt: 'daemon.start', config: config.configFile, data_dir: config.data_dir }, 'starting');
  await mkdir(config.data_dir, { recursive: true });

  const store: Store = openStore(config, { log: log.child({ mod: 'store' }) });
  // A store whose data a newer build wrote stops the start here, as the embedded one's open does.
  await store.ready?.().catch(async (e: unknown) => {
    await store.close();
    throw e;
  });
  const directory = createDirectory({ store, localDomains: config.domains.local, log: log.child({ mod: 'directory' }) });
  const dns = createResolver(config.dns);
  const pipeline = await loadPipeline(config, { store, directory, dns, log: log.child({ mod: 'pipeline' }) });
  const outbound = new Outbound({ config, dns, log: log.child({ mod: 'outbound' }) });
  // Next hops: the config's `routes` plus the ones added over the API (read on each lookup).
  const routes = new LiveRoutes(config.routes, store);
  const queue = createMessageQueue({ config, log: log.child({ mod: 'queue' }), directory, store, pipeline, outbound, routes });
  // Queue steering (postern queue) reaches the queue through files under data_dir: the control
  // channel while a daemon runs (its daemon.pid), the spool files themselves otherwise. The
  // channel is up before the queue's first round and goes down only after its last, so a tool
  // never edits spool files under a running queue; requests that come early wait for the start.
  let queueStarted!: () => void;
  const started = new Promise<void>((r) => (queueStarted = r));
  const control = new ControlServer(
    config.data_dir,
    async (req: ControlRequest): Promise<ControlResponse> => {
      await started;
      if (req.op === 'retry') return { ok: true, count: await queue.retry(req.id, req.domain) };
      const found = req.op === 'delete' ? await queue.remove(req.id) : await queue.bounce(req.id);
      return found ? { ok: true, count: 1 } : { ok: false, error: `no queued message ${req.id}` };
    },
    log.child({ mod: 'control' }),
  );
  await control.start();
  try {
    await queue.start();
  } catch (e) {
    await control.stop();
    throw e;
  }
  queueStarted();
  // Local submission (postern sendmail) drops files the daemon picks up, or the next start does.
  const pickup = new MaildropPickup(config.data_dir, { queueDir: queue.spool.queueDir, syncer: queue.spool.syncer, adopt: (id) => queue.adopt(id) }, log.child({ mod: 'maildrop' }));
  await pickup.start();
  const tls = await loadOrCreateTls(config);

  // Recipient verification for routes with verify: callout | list (answers cached in the store).
  const verifier = new RecipientVerifier({ store, log: log.child({ mod: 'verify' }), hostname: config.hostname, tls: config.outbound.tls });
  // In-line proxy backend connections, reused like outbound ones (outbound.reuse).
  const backends = new BackendPool({ maxMessages: config.outbound.reuse.max_messages, idleTimeoutMs: config.outbound.reuse.idle_timeout, idleLimit: config.outbound.concurrency.per_domain });
  const listeners: { name: string; listen(): Promise<{ port: number }>; close(): Promise<void> }[] = createSmtpListeners({ config, log, pipeline, directory, queue, tls, createMessage, verifier, backends, routes, etrn: { runQueue: (domain, o) => queue.retry(undefined, domain, o) } });
  if (config.listen.managesieve) listeners.push(createManageSieveListener({ config, log, directory, store, tls }));
  if (config.listen.api) listeners.push(createApiListener({ config, store, directory, pipeline, queue, log: log.child({ mod: 'api' }) }));
  // Reverse order of start: no new mail first, then the work in progress, then state.
  const shutdown = async () => {
    await Promise.allSettled(listeners.map((l) => l.close()));
    await pickup.stop();
    await queue.stop();
    await control.stop();
    outbound.close();
    verifier.close();
    backends.close();
    await pipeline.close();
    await store.close();
  };
  const ports: Record<string, number> = {};
  try {
    for (const l of listeners) ports[l.name] = (await l.listen()).port;
  } catch (e) {
    await shutdown();
    throw e;
  }
  // IMAP and POP3 have their config keys (CONTRACT.md) but no server in this build: say so rather
  // than let a configured port stay silently closed. With no config file they are only reserved.
  for (const name of UNSERVED_LISTENERS) {
    const l = config.listen[name];
    if (!l) continue;
    logEvent(lifecycle, config.configFile ? 'warn' : 'info', 'daemon.listener_unavailable', { listener: name, port: l.port }, `listen.${name}: not served by this build (IMAP and POP3 are planned); nothing listens on port ${l.port}`);
  }
  lifecycle.info({ evt: 'daemon.ready', ports }, `ready: ${Object.entries(ports).map(([n, p]) => `${n}=${p}`).join(' ')}`);

  let stopping: Promise<void> | null = null;
  return {
    ports,
    log,
    stop() {
      stopping ??= (async () => {
        await shutdown();
        lifecycle.info({ evt: 'daemon.stop' }, 'stopped');
      })();
      return stopping;
    },
  };
}
