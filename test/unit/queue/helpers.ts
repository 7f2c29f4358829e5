// Shared bits for queue tests: a config on a temp data dir, an envelope, a message, a log sink.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fromObject, type Config } from '../../../src/config/load.js';
import { createLogger, type Logger } from '../../../src/log/logger.js';
import type { Envelope } from '../../../src/queue/envelope.js';

export async function tempDir(prefix = 'postern-q-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export function testConfig(dataDir: string, extra: Record<string, unknown> = {}): Config {
  return fromObject({ hostname: 'mx.example.test', data_dir: dataDir, domains: { local: ['example.test'] }, ...extra }, null);
}

export function envelope(from: string, to: (string | { address: string; folder?: string })[], receivedAt = Date.now()): Envelope {
  return {
    mailFrom: from,
    recipients: to.map((t) => (typeof t === 'string' ? { address: t } : t)),
    source: { listener: 'smtp', remoteAddress: '192.0.2.1', protocol: 'ESMTP' },
    receivedAt,
  };
}

export function message(body: string, headers = 'From: a@example.net\r\nTo: b@example.test\r\nSubject: test\r\n'): Buffer {
  return Buffer.from(`${headers}\r\n${body}`, 'utf8');
}

/** A logger whose JSON lines are kept in `lines` (parsed). */
export function captureLogger(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: createLogger('debug', sink), lines };
}
