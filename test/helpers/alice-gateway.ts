// A running daemon with one local user, alice@example.test, and a nodemailer client to its smtp
// listener: the setup of the end-to-end scanner tests (clamav, spamassassin, rspamd), which send
// from an outside sender and read what reached alice's Maildir.
import assert from 'node:assert/strict';
import nodemailer from 'nodemailer';
import { startDaemon, removeDir, type RunningDaemon } from './daemon.js';
import { readMaildir, waitFor } from './wait.js';

export interface AliceGateway {
  d: RunningDaemon;
  /** Sends from sender@remote.example to alice; rejects with nodemailer's error on a refusal. */
  send(subject: string, body?: { text?: string; attachments?: { filename: string; content: string }[] }): Promise<{ response: string }>;
  /** The delivered message with this subject, once it is in alice's Maildir. */
  delivered(subject: string): Promise<string | undefined>;
  stop(): Promise<void>;
}

export async function startAliceGateway(config: Record<string, unknown>, opts: { dir?: string } = {}): Promise<AliceGateway> {
  const d = await startDaemon(config, opts);
  const r = await d.cli(['user', 'add', 'alice@example.test', '--password-stdin'], 'pw-alice\n');
  assert.equal(r.code, 0, r.stderr);
  const t = nodemailer.createTransport({ host: '127.0.0.1', port: d.ports.smtp, secure: false, tls: { rejectUnauthorized: false } });
  const has = (subject: string) => (x: { bytes: string }) => x.bytes.includes(`Subject: ${subject}`);
  return {
    d,
    send: (subject, body = {}) => t.sendMail({ from: 'sender@remote.example', to: 'alice@example.test', subject, ...body }),
    async delivered(subject) {
      const got = await waitFor(() => readMaildir(d, 'alice'), (m) => m.some(has(subject)));
      return got.find(has(subject))?.bytes;
    },
    async stop() {
      t.close();
      await d.stop();
      await removeDir(d.dir);
    },
  };
}
