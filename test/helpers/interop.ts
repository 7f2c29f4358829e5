// What the interop tests (Postern in front of a real Postfix or Dovecot) share: submitting
// numbered messages to Postern over SMTP, telling them apart by Message-ID on the far side,
// knowing when Postern's queue is empty, and reading a bounce with Python's `email` package.
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import type { RunningDaemon } from './daemon.js';
import { pythonJson } from './python.js';

export interface Submitted {
  messageId: string;
  to: string[];
}

/** A message whose body has a line starting with "." (dot-stuffing on every hop) and a long line. */
export function interopMessage(messageId: string, from: string, to: string[], subject: string): string {
  return [
    `From: <${from}>`,
    `To: ${to.map((t) => `<${t}>`).join(', ')}`,
    `Subject: ${subject}`,
    `Message-ID: ${messageId}`,
    `Date: ${new Date().toUTCString()}`,
    '',
    'first line',
    '.a line that starts with a dot',
    'x'.repeat(900),
    'last line',
    '',
  ].join('\r\n');
}

/** Sends each message over one SMTP connection to Postern's smtp listener (a trusted client). */
export async function submit(d: RunningDaemon, from: string, messages: { messageId: string; to: string[]; subject?: string }[]): Promise<Submitted[]> {
  const t = nodemailer.createTransport({ host: '127.0.0.1', port: d.ports.smtp, secure: false, ignoreTLS: true, pool: true, maxConnections: 1, maxMessages: Infinity });
  try {
    for (const m of messages) {
      await t.sendMail({ envelope: { from, to: m.to }, raw: interopMessage(m.messageId, from, m.to, m.subject ?? 'interop') });
    }
  } finally {
    t.close();
  }
  return messages.map((m) => ({ messageId: m.messageId, to: m.to }));
}

export function messageIdOf(bytes: string): string | undefined {
  return /^Message-ID:\s*(<[^>\r\n]+>)/im.exec(bytes)?.[1];
}

/** Entries in Postern's outbound spool. */
export async function spoolCount(d: RunningDaemon): Promise<number> {
  return (await readdir(join(d.dataDir, 'spool', 'q')).catch(() => [] as string[])).filter((f) => /^[0-9A-Z]{18}$/.test(f)).length;
}

/** Polls until `ok` holds; throws with `what` after `ms` (generous: CI machines are shared). */
export async function until(what: string, ok: () => boolean | Promise<boolean>, ms = 120_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export interface ParsedDsn {
  type: string;
  report_type: string | null;
  parts: string[];
  return_path: string | null;
  /** The message/delivery-status groups: the per-message one, then one per recipient. */
  groups: Record<string, string>[];
}

const PARSE_DSNS = `
import email, sys, json, os
from email import policy
out = []
d = sys.argv[1]
for sub in ("new", "cur"):
    p = os.path.join(d, sub)
    if not os.path.isdir(p):
        continue
    for name in sorted(os.listdir(p)):
        m = email.message_from_binary_file(open(os.path.join(p, name), "rb"), policy=policy.default)
        if m.get_content_type() != "multipart/report":
            continue
        parts = list(m.iter_parts())
        groups = [dict(g.items()) for g in parts[1].get_payload()] if len(parts) > 1 else []
        out.append({"type": m.get_content_type(), "report_type": m.get_param("report-type"), "parts": [x.get_content_type() for x in parts], "return_path": m["Return-Path"], "groups": groups})
print(json.dumps(out))
`;

/** Every multipart/report in a local user's Maildir, parsed by Python's `email`. */
export async function readDsns(d: RunningDaemon, localPart: string): Promise<ParsedDsn[]> {
  return pythonJson<ParsedDsn[]>(PARSE_DSNS, [join(d.dataDir, 'mail', 'example.test', localPart)]);
}
