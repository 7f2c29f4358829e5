// RFC 5703 §5 replace, §6 enclose and §7 extracttext (with the RFC 5229 modifiers), using the
// RFC's own examples (§7 and §8) and the rules of §5-§6; the rewritten messages are read back
// with Python's email package (an independent MIME parser). Also the envelope-only analysis
// (sieve/analyze.ts) that lets the gateway run a script at RCPT.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { asksOnlyEnvelope } from '../../../src/sieve/analyze.js';
import { compile } from '../../../src/sieve/compile.js';
import { pythonJson } from '../../helpers/python.js';
import { msg, mustCompile, runScript, summary } from './harness.js';

const MIXED = msg(
  [
    'From: Boss <boss@example.org>',
    'To: user@example.org',
    'Subject: FYI: quarterly numbers',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="b1"',
  ],
  [
    'preamble',
    '--b1',
    'Content-Type: text/plain; charset=us-ascii',
    '',
    'Numbers are Up and to the right. ' + 'x'.repeat(200),
    '--b1',
    'Content-Type: application/exe; name="run.exe"',
    'Content-Disposition: attachment; filename="run.exe"',
    'Content-Transfer-Encoding: base64',
    '',
    'TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA',
    '--b1',
    'Content-Type: application/octet-stream',
    'Content-Disposition: attachment; filename="notes.com"',
    '',
    'binary',
    '--b1--',
    '',
  ].join('\r\n'),
);

/** Parses a message with Python's email package: its tree of content types, subject, from. */
const PARSE = `
import email, sys, json
from email import policy
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.default)
def walk(p):
    out = {"type": p.get_content_type()}
    if p.is_multipart():
        out["parts"] = [walk(c) for c in p.iter_parts()]
    elif p.get_content_maintype() == "text":
        out["text"] = p.get_content()
    return out
print(json.dumps({"tree": walk(m), "subject": str(m["subject"] or ""), "from": str(m["from"] or ""),
                  "original_subject": str(m["original-subject"] or ""), "original_from": str(m["original-from"] or ""),
                  "headers": [k for k in m.keys()], "defects": [str(d) for d in m.defects]}))
`;
interface Parsed {
  tree: { type: string; parts?: Parsed['tree'][]; text?: string };
  subject: string;
  from: string;
  original_subject: string;
  original_from: string;
  headers: string[];
  defects: string[];
}
const parse = (b: Buffer) => pythonJson<Parsed>(PARSE, [], { input: b.toString('latin1') });

describe('RFC 5703 replace', () => {
  it('§8 example 1: executable attachments replaced by a notice, the structure kept', async () => {
    const r = await runScript(
      `require ["foreverypart", "mime", "replace"];
       foreverypart {
         if anyof (header :mime :contenttype :is "Content-Type" "application/exe",
                   header :mime :param "filename" :matches ["Content-Type", "Content-Disposition"] "*.com") {
           replace "Executable attachment removed by user filter";
         }
       }`,
      MIXED,
    );
    assert.equal(summary(r), 'implicit');
    assert.ok(r.message, 'the message was rewritten');
    const p = await parse(r.message);
    assert.deepEqual(p.tree.parts!.map((x) => x.type), ['text/plain', 'text/plain', 'text/plain']);
    assert.match(p.tree.parts![0]!.text!, /^Numbers are Up/);
    assert.equal(p.tree.parts![1]!.text!.trim(), 'Executable attachment removed by user filter');
    assert.equal(p.tree.parts![2]!.text!.trim(), 'Executable attachment removed by user filter');
    assert.equal(p.subject, 'FYI: quarterly numbers');
    assert.deepEqual(p.defects, []);
  });

  it('later tests see the replaced structure at once', async () => {
    const r = await runScript(
      `require ["foreverypart", "mime", "replace", "body", "fileinto"];
       foreverypart { if header :mime :type "Content-Type" "application" { replace "gone"; } }
       if body :content "application" :contains "" { fileinto "StillThere"; }
       if body :text :contains "gone" { fileinto "Replaced"; }`,
      MIXED,
    );
    assert.equal(summary(r), 'fileinto:Replaced');
  });

  it('outside foreverypart the whole body is replaced; :subject and :from keep the old fields as Original-*', async () => {
    const r = await runScript(
      `require ["replace"];
       replace :subject "Message withheld – größer" :from "Filter <filter@example.org>" "The message was withheld.";`,
      MIXED,
    );
    const p = await parse(r.message!);
    assert.equal(p.tree.type, 'text/plain');
    assert.equal(p.tree.text!.trim(), 'The message was withheld.');
    assert.equal(p.subject, 'Message withheld – größer');
    assert.equal(p.original_subject, 'FYI: quarterly numbers');
    assert.equal(p.from, 'Filter <filter@example.org>');
    assert.equal(p.original_from, 'Boss <boss@example.org>');
    // The old MIME fields gave way to the new entity's; To is kept.
    assert.ok(p.headers.includes('To'));
    assert.equal(p.headers.filter((h) => h.toLowerCase() === 'content-type').length, 1);
    // RFC 2047 only because the subject is not ASCII.
    assert.match(r.message!.toString('latin1'), /\r\nSubject: =\?UTF-8\?B\?/);
  });

  it(':mime takes a whole MIME entity', async () => {
    const entity = 'Content-Type: multipart/alternative; boundary=\\"alt\\"\r\n\r\n--alt\r\nContent-Type: text/plain\r\n\r\nplain\r\n--alt\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--alt--\r\n';
    const r = await runScript(`require ["replace", "mime", "fileinto"]; replace :mime "${entity}"; if header :mime :anychild :contenttype "Content-Type" "text/html" { fileinto "Html"; }`, MIXED);
    assert.equal(summary(r), 'fileinto:Html');
    const p = await parse(r.message!);
    assert.equal(p.tree.type, 'multipart/alternative');
    assert.deepEqual(p.tree.parts!.map((x) => x.type), ['text/plain', 'text/html']);
  });

  it('an invalid literal :from is a compile error; needs require "replace"', () => {
    const a = compile('require "replace"; replace :from "not an address" "x";');
    assert.equal(a.ok, false);
    if (!a.ok) assert.match(a.errors[0]!.message, /invalid :from/);
    const b = compile('replace "x";');
    assert.equal(b.ok, false);
    if (!b.ok) assert.match(b.errors[0]!.message, /require "replace"/);
  });

  it('no replace, no rewritten message', async () => {
    const r = await runScript('require "fileinto"; fileinto "A";', MIXED);
    assert.equal(r.message, undefined);
  });
});

describe('RFC 5703 enclose', () => {
  it('§8 example 2: a message with executable attachments is enclosed with a warning', async () => {
    const r = await runScript(
      `require ["foreverypart", "mime", "enclose"];
       foreverypart {
         if header :mime :param "filename" :matches ["Content-Type", "Content-Disposition"]
              ["*.com", "*.exe", "*.vbs", "*.scr", "*.pif", "*.hta", "*.bat", "*.zip"] {
           # these attachment types are executable
           enclose :subject "Warning" text:
WARNING! The enclosed message contains executable attachments.
.
;
           break;
         }
       }`,
      MIXED,
    );
    assert.equal(summary(r), 'implicit');
    const p = await parse(r.message!);
    assert.equal(p.tree.type, 'multipart/mixed');
    assert.deepEqual(p.tree.parts!.map((x) => x.type), ['text/plain', 'message/rfc822']);
    assert.match(p.tree.parts![0]!.text!, /^WARNING! The enclosed message contains executable attachments\./);
    assert.equal(p.subject, 'Warning');
    assert.equal(p.from, 'Boss <boss@example.org>');
    assert.deepEqual(p.defects, []);
    // The enclosed original is intact.
    assert.match(r.message!.toString('latin1'), /Content-Type: message\/rfc822\r\n\r\nFrom: Boss <boss@example\.org>\r\nTo: user@example\.org\r\nSubject: FYI: quarterly numbers\r\n/);
  });

  it(':headers lines go on the new message; the last enclose wins; tests after it see the original', async () => {
    const r = await runScript(
      `require ["enclose", "fileinto"];
       enclose :subject "first" "one";
       enclose :headers ["X-Flagged: yes", "Reply-To: desk@example.org"] "two";
       if header :is "subject" "FYI: quarterly numbers" { fileinto "Orig"; }`,
      MIXED,
    );
    assert.equal(summary(r), 'fileinto:Orig');
    const text = r.message!.toString('latin1');
    assert.match(text, /^X-Flagged: yes\r\nReply-To: desk@example\.org\r\nSubject: FYI: quarterly numbers\r\n/);
    const p = await parse(r.message!);
    assert.equal(p.tree.parts![0]!.text!.trim(), 'two');
  });

  it('refuses a :headers item that is not a header field or would forge one', () => {
    for (const bad of ['no colon here', 'Received: from x', 'Content-Type: text/html']) {
      const c = compile(`require "enclose"; enclose :headers "${bad}" "x";`);
      assert.equal(c.ok, false, bad);
    }
  });
});

describe('RFC 5703 extracttext with modifiers', () => {
  it('§7 example: the first 100 characters of the first text part', async () => {
    const r = await runScript(
      `require ["mime", "variables", "extracttext", "foreverypart", "fileinto"];
       if header :contains "from" "boss@example.org" {
         if header :matches "Subject" "*" { set "subject" "\${1}"; }
         foreverypart {
           if header :mime :type "Content-Type" "text" { extracttext :first 100 "msgcontent"; break; }
         }
         if not header :contains "subject" "FYI:" { fileinto "Boss"; }
         set :length "n" "\${msgcontent}";
         fileinto "\${n}-\${subject}";
       }`,
      MIXED,
    );
    assert.equal(summary(r), 'fileinto:100-FYI: quarterly numbers');
  });

  const cases: [string, string][] = [
    [':lower', 'numbers are up'],
    [':upper', 'NUMBERS ARE UP'],
    [':upperfirst :lower', 'Numbers are up'],
    [':lowerfirst', 'numbers are Up'],
    [':length', '14'],
    [':quotewildcard', 'Numbers are Up'],
  ];
  for (const [mods, want] of cases) {
    it(`extracttext ${mods}`, async () => {
      const r = await runScript(
        `require ["mime", "variables", "extracttext", "foreverypart", "fileinto"];
         foreverypart { if header :mime :subtype "Content-Type" "plain" { extracttext ${mods} :first 14 "t"; break; } }
         fileinto "\${t}";`,
        MIXED,
      );
      assert.equal(summary(r), `fileinto:${want}`);
    });
  }
  it('two modifiers of one precedence are a compile error', () => {
    const c = compile('require ["mime", "variables", "extracttext", "foreverypart"]; foreverypart { extracttext :lower :upper "t"; }');
    assert.equal(c.ok, false);
  });
});

describe('envelope-only scripts (run at RCPT by the gateway)', () => {
  const cases: [string, boolean][] = [
    ['require ["envelope", "reject"]; if envelope :domain "from" "x.example" { reject "no"; }', true],
    ['require ["envelope", "reject", "variables"]; if envelope :matches "to" "*@*" { set "d" "${2}"; } if string "${d}" "x.example" { reject "no"; }', true],
    ['require ["envelope", "reject"]; if allof (envelope "from" "a@b", not envelope "to" "c@d") { reject "no"; }', true],
    ['require ["envelope", "reject"]; if anyof (envelope "from" "a@b", header "subject" "x") { reject "no"; }', false],
    ['require "reject"; if address "from" "a@b" { reject "no"; }', false],
    ['require ["envelope", "reject"]; if size :over 1M { reject "big"; }', false],
    ['require ["envelope", "include"]; include "other";', false],
    ['require ["envelope", "duplicate", "reject"]; if duplicate { reject "dup"; }', false],
    ['keep;', true],
  ];
  for (const [text, want] of cases) {
    it(`${want ? 'envelope only' : 'needs the message'}: ${text.slice(text.indexOf(';') + 1, 80).trim() || text}`, () => assert.equal(asksOnlyEnvelope(mustCompile(text)), want));
  }
});
