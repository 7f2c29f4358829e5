// Shared helpers for the Sieve unit tests: compile-or-throw, run with a message built from
// header lines and a body, and a compact view of the result.
import assert from 'node:assert/strict';
import { compile, type CompileOptions } from '../../../src/sieve/compile.js';
import { run, type RunOptions, type SieveResult } from '../../../src/sieve/interpret.js';
import type { Envelope, SieveHost } from '../../../src/sieve/registry.js';

export const ENVELOPE: Envelope = { from: 'sender@example.com', to: 'user@example.org' };

export function mustCompile(text: string, opts?: CompileOptions) {
  const r = compile(text, opts);
  if (!r.ok) assert.fail(`did not compile: ${JSON.stringify(r.errors)}\n${text}`);
  return r.script;
}

export function msg(headers: string[], body = 'Hello\r\n'): string {
  return headers.join('\r\n') + '\r\n\r\n' + body;
}

export const BASIC = msg([
  'From: "Joe Sender" <joe+news@example.com>',
  'To: user@example.org, "Other, Person" <other@example.net>',
  'Cc: undisclosed-recipients:;',
  'Subject: [acme-users] [fwd] version 1.0 is out',
  'Date: Fri, 08 Jul 2005 17:41:40 -0700',
  'Message-ID: <1@example.com>',
  'X-Spam-Score: 7.5',
  'Received: from a by b; Fri, 08 Jul 2005 17:41:45 -0700',
  'Received: from c by d; Fri, 08 Jul 2005 17:41:42 -0700',
]);

export async function runScript(text: string, message: string | Buffer = BASIC, opts: { envelope?: Partial<Envelope>; host?: SieveHost; run?: RunOptions } = {}): Promise<SieveResult> {
  const script = mustCompile(text);
  return run(script, message, { ...ENVELOPE, ...(opts.envelope ?? {}) }, opts.host ?? {}, opts.run ?? {});
}

/** "fileinto:Junk", "keep", "discard", "redirect:a@b", "reject:why", "vacation", plus "+implicit". */
export function summary(r: SieveResult): string {
  const parts = r.actions.map((a) => {
    switch (a.type) {
      case 'fileinto':
        return `fileinto:${a.mailbox}${a.flags.length ? `[${a.flags.join(' ')}]` : ''}${a.copy ? ':copy' : ''}`;
      case 'keep':
        return `keep${a.flags.length ? `[${a.flags.join(' ')}]` : ''}`;
      case 'redirect':
        return `redirect:${a.address}${a.copy ? ':copy' : ''}`;
      case 'reject':
      case 'ereject':
        return `${a.type}:${a.reason}`;
      default:
        return a.type;
    }
  });
  if (r.implicitKeep) parts.push(`implicit${r.implicitKeepFlags.length ? `[${r.implicitKeepFlags.join(' ')}]` : ''}`);
  if (r.status === 'runtime-error') parts.unshift('ERROR');
  return parts.join(' ');
}
