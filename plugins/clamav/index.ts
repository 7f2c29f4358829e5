// clamav: scans each message with clamd at the data stage, over TCP or a unix socket, using the
// INSTREAM command (clamd(8) "INSTREAM": the null-terminated form "zINSTREAM\0", then chunks of
// <4-octet big-endian length><data>, ended by a zero-length chunk; one reply, "\0"-terminated:
// "stream: OK", "stream: <signature> FOUND" or "<reason> ERROR").
//
//   - clean      → `next`; X-Virus-Status: clean (status_header), trace "clean".
//   - infected   → 554 5.7.1 Message refused: virus found (<signature>)  (reject_code/_enhanced/
//                  _text), or with `action: quarantine` delivered into `quarantine_folder` with
//                  X-Virus-Status: infected and X-Virus-Signature.
//   - larger than max_size (keep it ≤ clamd's StreamMaxLength) → `oversize`: skip (not scanned,
//     traced and logged), truncate (scan the first max_size octets) or reject (552 5.3.4).
//   - clamd unreachable, too slow (hook `timeout`), or answering ERROR → the hook fails, and the
//     runner answers 451 4.3.0 (nothing is queued, the client retries) unless `on_error: fail-open`.
// The result is recorded for Sieve virustest (scanner/results.ts: 1 clean, 5 infected) and in
// the transaction trace (one entry of this plugin's own with clamd's answer).
// Metrics (besides the host's per-hook ones, src/pipeline/metrics.ts):
//   postern_clamav_viruses_total{signature}       infected messages, by the signature clamd named
//   postern_clamav_scanner_errors_total{reason}   scans that did not happen: unreachable (no
//                                                 connection or no whole reply), timeout (the
//                                                 hook's deadline), error_reply (clamd said ERROR);
//                                                 a scan aborted because the client left is not one
// Config keys read: host, port, socket, connect_timeout, max_size, oversize, chunk_size, action,
// quarantine_folder, reject_code, reject_enhanced, reject_text, status_header, scan_relaying.
import { performance } from 'node:perf_hooks';
import { definePlugin, type HookContext } from '../../src/pipeline/plugin.js';
import { next, quarantine, reject, type Enhanced, type Verdict } from '../../src/pipeline/verdict.js';
import { describeEndpoint, endpointOf, exchange, ScannerUnavailable, type Endpoint } from '../../src/pipeline/scanner/connection.js';
import { recordScan } from '../../src/pipeline/scanner/results.js';
import { pluginCounter } from '../../src/pipeline/metrics.js';
import { HookTimeoutError } from '../../src/pipeline/runner.js';
import { logEvent } from '../../src/log/logger.js';
import { configSchema, type ClamavConfig } from './config.js';

export const CLAMD_PORT = 3310;

const virusesFound = pluginCounter('postern_clamav_viruses_total', 'Infected messages found by clamd, by signature', ['signature']);
const scannerErrors = pluginCounter('postern_clamav_scanner_errors_total', 'clamd scans that did not happen, by reason (unreachable, timeout, error_reply)', ['reason']);

interface State {
  endpoint: Endpoint;
}

type Ctx = HookContext<ClamavConfig, State>;

/** clamd's answer to one INSTREAM scan. */
export type ClamdResult = { kind: 'clean' } | { kind: 'infected'; signature: string } | { kind: 'error'; reason: string };

export default definePlugin({
  name: 'clamav',
  config: configSchema,
  init({ config }): State {
    return { endpoint: endpointOf(config, CLAMD_PORT) };
  },
  hooks: {
    data: scan,
  },
});

async function scan(ctx: Ctx): Promise<Verdict> {
  const c = ctx.config;
  if (!ctx.message) return next();
  if (!c.scan_relaying && (ctx.session.relaying || ctx.session.authUser)) return next();
  let raw = await ctx.message.raw();
  if (raw.length > c.max_size) {
    if (c.oversize === 'reject') {
      ctx.trace?.({ verdict: 'reject', detail: `${raw.length} octets, over max_size ${c.max_size}` });
      return reject(552, '5.3.4', 'Message too big to be scanned for viruses');
    }
    if (c.oversize === 'skip') {
      logEvent(ctx.log, 'info', 'plugin.clamav.skipped', { size: raw.length, max_size: c.max_size }, 'message over max_size: not scanned');
      ctx.trace?.({ verdict: 'next', detail: `not scanned: ${raw.length} octets, over max_size ${c.max_size}` });
      setStatus(ctx, 'not scanned');
      return next();
    }
    raw = raw.subarray(0, c.max_size);
  }

  const started = performance.now();
  let result: ClamdResult;
  try {
    result = await instream(ctx.state.endpoint, raw, { chunkSize: c.chunk_size, connectTimeoutMs: c.connect_timeout, signal: ctx.signal });
  } catch (e) {
    // The hook's deadline aborts the scan; a client that went away is not the scanner's fault.
    if (!ctx.signal.aborted) scannerErrors.inc(ctx, { reason: 'unreachable' });
    else if (ctx.signal.reason instanceof HookTimeoutError) scannerErrors.inc(ctx, { reason: 'timeout' });
    throw e;
  }
  const ms = Math.round(performance.now() - started);
  const where = describeEndpoint(ctx.state.endpoint);
  if (result.kind === 'error') {
    scannerErrors.inc(ctx, { reason: 'error_reply' });
    // A scan that did not happen must not pass as clean: the runner applies the failure policy.
    throw new ScannerUnavailable('clamd', `${where} answered: ${result.reason}`);
  }
  if (result.kind === 'clean') {
    recordScan(ctx.message, { virus: { level: 1, scanner: 'clamav' } });
    ctx.trace?.({ verdict: 'next', detail: `clean (clamd ${where}, ${raw.length} octets, ${ms}ms)` });
    setStatus(ctx, 'clean');
    return next();
  }

  const sig = result.signature;
  virusesFound.inc(ctx, { signature: sig });
  recordScan(ctx.message, { virus: { level: 5, signature: sig, scanner: 'clamav' } });
  logEvent(ctx.log, 'info', 'plugin.clamav.infected', { signature: sig, action: c.action, queueId: ctx.tx?.id }, `virus found: ${sig}`);
  if (c.action === 'quarantine') {
    ctx.trace?.({ verdict: 'quarantine', detail: `infected: ${sig} → ${c.quarantine_folder}` });
    setStatus(ctx, 'infected');
    ctx.message.headers.add('X-Virus-Signature', sig);
    return quarantine(c.quarantine_folder, `clamav: ${sig}`);
  }
  ctx.trace?.({ verdict: 'reject', detail: `infected: ${sig}` });
  return reject(c.reject_code, c.reject_enhanced as Enhanced, c.reject_text.replaceAll('{signature}', sig));
}

function setStatus(ctx: Ctx, status: string): void {
  const h = ctx.config.status_header;
  if (!h || !ctx.message) return;
  // Our own verdict replaces one the sender wrote (a forged "clean" must not reach Sieve).
  ctx.message.headers.remove(h);
  ctx.message.headers.add(h, status);
}

/**
 * Sends `data` to clamd with INSTREAM and parses the answer. Rejects with ScannerUnavailable when
 * clamd cannot be reached or does not answer in full.
 */
export async function instream(endpoint: Endpoint, data: Buffer, opts: { chunkSize: number; connectTimeoutMs: number; signal: AbortSignal }): Promise<ClamdResult> {
  const reply = await exchange(endpoint, {
    scanner: 'clamd',
    connectTimeoutMs: opts.connectTimeoutMs,
    signal: opts.signal,
    complete: (r) => r.includes(0),
    // clamd stops reading past its StreamMaxLength; its reply may be lost in the reset.
    hangupHint: "is the message over clamd's StreamMaxLength? set max_size at or below it",
    async send(write) {
      await write('zINSTREAM\0');
      for (let off = 0; off < data.length; off += opts.chunkSize) {
        const chunk = data.subarray(off, off + opts.chunkSize);
        const len = Buffer.alloc(4);
        len.writeUInt32BE(chunk.length);
        await write(Buffer.concat([len, chunk]));
      }
      await write(Buffer.alloc(4));
    },
  });
  return parseReply(reply);
}

/** Parses clamd's reply to a z-prefixed INSTREAM ("stream: OK\0", "stream: Sig FOUND\0", "… ERROR\0"). */
export function parseReply(reply: Buffer): ClamdResult {
  const text = reply.toString('utf8').replace(/\0[\s\S]*$/, '').trim();
  const found = /^(?:stream|[^:]*):\s*(.+?)\s+FOUND$/.exec(text);
  if (found) return { kind: 'infected', signature: found[1]! };
  if (/^(?:stream|[^:]*):\s*OK$/.test(text)) return { kind: 'clean' };
  if (/size limit exceeded/i.test(text)) return { kind: 'error', reason: `${text} (set max_size at or below clamd's StreamMaxLength)` };
  return { kind: 'error', reason: text || 'empty reply' };
}
