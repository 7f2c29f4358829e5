// Chain-cost figures for `npm run bench`: what each content plugin costs, as accepted messages/s
// through a running daemon (10 KB messages over BENCH_CONNECTIONS connections into Maildir, every
// message scanned), one figure per chain:
//   chain-bare     relay-acl only: the bare accept, the baseline of the others
//   chain-spamd    + spamassassin (real spamd, started as the tests start it: loopback port,
//                  packaged rules, no network tests, 2 children)
//   chain-clamd    + clamav (real clamd, the tests' own one-signature database, loopback port)
//   chain-dkim     + auth-results verifying a DKIM signature (rsa-sha256, 2048 bits), SPF and
//                  DMARC against the loopback DNS server (no cache: three lookups per message)
//   chain-sieve    + the gateway Sieve plugin with a 100-rule admin script (bench/sieve.ts
//                  adminRules, nothing matches: every test of every rule runs)
//   chain-full     all of the above in one chain
// Each line gives msgs_per_s, p50/p99 accept latency (end of DATA to 250), the daemon's CPU ms
// per message (the scanners' own CPU is not in it) and vs_bare (msgs_per_s / the bare figure).
// clamd or spamd not installed, or not starting: that figure's line says skipped and why.
// Environment: BENCH_CHAIN_MESSAGES (default 600 per figure), BENCH_CONNECTIONS, BENCH_SIZE.
import { access, mkdtemp, writeFile } from 'node:fs/promises';
import { constants } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dkimSign } from 'mailauth';
import { runLoad, percentile, makeMessage } from './smtp-load.js';
import { adminRules } from './sieve.js';
import { cpuSample } from './proc-cpu.js';
import { startDaemon } from '../test/helpers/daemon.js';
import { removeLater } from './scratch.js';
import { startDnsServer, type RunningDnsServer } from '../test/helpers/dns-server.js';
import { startClamd, type RunningClamd } from '../test/helpers/clamd.js';
import { startSpamd, type RunningSpamd } from '../test/helpers/spamd.js';

type Emit = (o: Record<string, unknown>) => void;

export const CHAIN_FIGURES = ['bare', 'spamd', 'clamd', 'dkim', 'sieve', 'full'] as const;
export type ChainFigure = (typeof CHAIN_FIGURES)[number];

const SENDER = 'sender@origin.bench';
const USERS = 4;

/** What each figure needs besides the bare chain. */
const NEEDS: Record<ChainFigure, ('spamd' | 'clamd')[]> = { bare: [], spamd: ['spamd'], clamd: ['clamd'], dkim: [], sieve: [], full: ['spamd', 'clamd'] };
const INSTALL: Record<'spamd' | 'clamd', string> = { spamd: 'apt-get install spamassassin spamd', clamd: 'apt-get install clamav-daemon' };

export async function benchChain(emit: Emit, o: { figures: readonly ChainFigure[]; messages: number; connections: number; size: number }): Promise<void> {
  const scanners: { spamd?: RunningSpamd | Error; clamd?: RunningClamd | Error } = {};
  const wanted = new Set(o.figures.flatMap((f) => NEEDS[f]));
  // Started once for every figure that needs them, as the tests start them.
  if (wanted.has('spamd')) scanners.spamd = await startScanner('spamd', '/usr/sbin/spamd', startSpamd);
  if (wanted.has('clamd')) scanners.clamd = await startScanner('clamd', '/usr/sbin/clamd', startClamd);

  // DKIM: a signing key for origin.bench published on the loopback DNS server with SPF and DMARC.
  const key = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const dns = await startDnsServer({
    records: {
      'origin.bench': { TXT: ['v=spf1 ip4:127.0.0.1 -all'] },
      '_dmarc.origin.bench': { TXT: ['v=DMARC1; p=reject'] },
      'b2026._domainkey.origin.bench': { TXT: [`v=DKIM1; k=rsa; p=${key.publicKey.export({ type: 'spki', format: 'der' }).toString('base64')}`] },
    },
  });
  const plain = makeMessage(o.size, SENDER, 'user0@example.test');
  const signed = await sign(plain, key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString());

  let bare: number | undefined;
  try {
    for (const figure of o.figures) {
      const missing = NEEDS[figure].map((n) => [n, scanners[n]] as const).find(([, s]) => s instanceof Error);
      if (missing) {
        emit({ bench: `chain-${figure}`, skipped: (missing[1] as Error).message });
        continue;
      }
      const r = await runFigure(figure, { ...o, dns, signed, spamd: scanners.spamd as RunningSpamd | undefined, clamd: scanners.clamd as RunningClamd | undefined });
      if (figure === 'bare') bare = r.msgs_per_s;
      emit({ bench: `chain-${figure}`, ...r, ...(bare && figure !== 'bare' ? { vs_bare: +(r.msgs_per_s / bare).toFixed(3) } : {}) });
    }
  } finally {
    await dns.stop();
    for (const s of [scanners.spamd, scanners.clamd]) if (s && !(s instanceof Error)) await s.close();
  }
}

/** Starts a scanner, or returns why it cannot run (the figure is then skipped, not failed). */
async function startScanner<T>(name: 'spamd' | 'clamd', path: string, start: () => Promise<T>): Promise<T | Error> {
  try {
    await access(path, constants.X_OK);
  } catch {
    return new Error(`${name} is not installed (${path} missing): ${INSTALL[name]}`);
  }
  try {
    return await start();
  } catch (e) {
    return new Error(`${name} did not start: ${(e as Error).message.split('\n')[0]}`);
  }
}

async function sign(message: Buffer, pem: string): Promise<Buffer> {
  const options = { signatureData: [{ signingDomain: 'origin.bench', selector: 'b2026', privateKey: pem, algorithm: 'rsa-sha256' }] };
  const r = await dkimSign(message, options as unknown as Parameters<typeof dkimSign>[1]);
  if (r.errors.length) throw new Error(`DKIM signing for the bench failed: ${r.errors.map((e) => e.message).join('; ')}`);
  return Buffer.concat([Buffer.from(r.signatures), message]);
}

interface FigureDeps {
  messages: number;
  connections: number;
  dns: RunningDnsServer;
  signed: Buffer;
  spamd?: RunningSpamd;
  clamd?: RunningClamd;
}

function chainOf(figure: ChainFigure, d: FigureDeps): unknown[] {
  const has = (f: ChainFigure) => figure === f || figure === 'full';
  return [
    'relay-acl',
    ...(has('dkim') ? ['auth-results'] : []),
    ...(has('clamd') ? [{ clamav: { host: '127.0.0.1', port: d.clamd!.port, timeout: '60s' } }] : []),
    ...(has('spamd') ? [{ spamassassin: { host: '127.0.0.1', port: d.spamd!.port, timeout: '60s' } }] : []),
    ...(has('sieve') ? [{ sieve: { scripts: ['admin.sieve'] } }] : []),
  ];
}

async function runFigure(figure: ChainFigure, d: FigureDeps) {
  const dir = await mkdtemp(join(tmpdir(), `postern-bench-chain-${figure}-`));
  await writeFile(join(dir, 'admin.sieve'), adminRules(100));
  const plugins = chainOf(figure, d);
  const daemon = await startDaemon({ log: { level: 'warn' }, relay: { networks: [] }, dns: { servers: [d.dns.server] }, plugins }, { dir, timeoutMs: 60_000 });
  try {
    for (let u = 0; u < USERS; u++) {
      const r = await daemon.cli(['user', 'add', `user${u}@example.test`, '--password-stdin'], 'secret-password\n');
      if (r.code !== 0) throw new Error(`user add failed: ${r.stderr}`);
    }
    const opts = { host: '127.0.0.1', port: daemon.ports.smtp!, connections: d.connections, from: SENDER, body: d.signed, to: (i: number) => `user${i % USERS}@example.test` };
    // Warm-up: the JIT, spamd's children, the scanners' first connections.
    const warm = await runLoad({ ...opts, messages: Math.min(100, d.messages) });
    if (warm.failed) throw new Error(`chain-${figure} warm-up failed: ${warm.errors.join('; ')}`);
    const cpu0 = await cpuSample(daemon.proc.pid!);
    const r = await runLoad({ ...opts, messages: d.messages });
    const cpu1 = await cpuSample(daemon.proc.pid!);
    return {
      plugins: plugins.map((p) => (typeof p === 'string' ? p : Object.keys(p as object)[0])).join(','),
      messages: d.messages,
      accepted: r.sent,
      failed: r.failed,
      connections: d.connections,
      message_bytes: d.signed.length,
      msgs_per_s: Math.round(r.sent / (r.wallMs / 1000)),
      p50_accept_ms: +percentile(r.latenciesMs, 50).toFixed(2),
      p99_accept_ms: +percentile(r.latenciesMs, 99).toFixed(2),
      ...(cpu0 && cpu1 ? { daemon_cpu_ms_per_msg: +((cpu1.processMs - cpu0.processMs) / Math.max(1, r.sent)).toFixed(3) } : {}),
      errors: r.errors,
    };
  } finally {
    await daemon.stop();
    removeLater(dir);
  }
}
