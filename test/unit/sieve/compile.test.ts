// Compile errors: every fixture in test/fixtures/sieve/bad must fail with its expected
// line:column and message (expected.json), plus scripts that must compile (RFC examples).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { compile } from '../../../src/sieve/compile.js';

const BAD = fileURLToPath(new URL('../../fixtures/sieve/bad/', import.meta.url));
const expected = JSON.parse(readFileSync(BAD + 'expected.json', 'utf8')) as Record<string, { line: number; column: number; message: string }>;

describe('sieve scripts that must not compile', () => {
  it('every fixture has an expectation and there are at least 40', () => {
    const files = readdirSync(BAD).filter((f) => f.endsWith('.sieve')).sort();
    assert.deepEqual(files, Object.keys(expected).sort());
    assert.ok(files.length >= 40);
  });
  for (const [file, want] of Object.entries(expected)) {
    it(`${file} → ${want.line}:${want.column} ${want.message}`, () => {
      const r = compile(readFileSync(BAD + file, 'utf8'));
      assert.equal(r.ok, false, 'compiled but should not');
      if (r.ok) return;
      const hit = r.errors.find((e) => e.line === want.line && e.column === want.column && e.message.includes(want.message));
      assert.ok(hit, `got ${JSON.stringify(r.errors)}`);
    });
  }
});

// Normative examples (scripts) from the RFCs; each must compile.
const GOOD: [string, string][] = [
  [
    'RFC 5228 §3.1 if/elsif/else',
    `require "fileinto";
     if header :contains "from" "coyote" {
        discard;
     } elsif header :contains ["subject"] ["$$$"] {
        discard;
     } else {
        fileinto "INBOX";
     }`,
  ],
  [
    'RFC 5228 §9 extended example',
    `require "fileinto";
     if header :is "Sender" "owner-ietf-mta-filters@imc.org"
             {
                 fileinto "filter";  # move to "filter" mailbox
             }
     elsif address :DOMAIN :is ["From", "To"] "example.com"
             {
                 keep;               # keep in "In" mailbox
             }
     elsif anyof (NOT address :all :contains
                    ["To", "Cc", "Bcc"] "me@example.com",
                  header :matches "subject"
                    ["*make*money*fast*", "*university*dipl*mas*"])
             {
                 fileinto "spam";   # move to "spam" mailbox
             }
     else
             {
                 fileinto "personal";
             }`,
  ],
  ['RFC 5228 §5.2 allof', 'if allof (header :contains "From" "Cream", header :contains "subject" "money") { discard; }'],
  ['RFC 5228 §5.9 size', 'if size :over 500K { discard; }'],
  ['RFC 5228 §2.4.2.4 encoded-character', 'require "encoded-character";\nif header :contains "Subject" "$${hex:24 24}" { discard; }'],
  [
    'RFC 5229 §4 set examples',
    `require "variables";
     set "honorific"  "Mr";
     set "first_name" "Wile";
     set "last_name"  "Coyote";
     set "vacation" text:
Dear \${HONORIFIC} \${last_name},
I'm out, please leave a message after the meep.
.
;
     set :length "b" "\${a}";
     set :upper "c" "\${a}";`,
  ],
  [
    'RFC 5230 §4 vacation',
    `require "vacation";
     if header :contains "subject" "cyrus" {
         vacation "I'm out -- send mail to cyrus-bugs";
     } else {
         vacation "I'm out -- call me at +1 304 555 0123";
     }`,
  ],
  ['RFC 5231 §6 relational', 'require ["relational", "comparator-i;ascii-numeric"];\nif header :value "lt" :comparator "i;ascii-numeric" ["x-priority"] ["3"] { keep; }'],
  ['RFC 5232 §6 imap4flags', 'require ["imap4flags", "fileinto"];\nif size :over 500K { setflag "\\\\Deleted"; }\nfileinto :flags "\\\\Seen" "INBOX.From.Boss";'],
  ['RFC 5233 §4 subaddress', 'require ["envelope", "subaddress", "fileinto"];\nif envelope :user "to" "postmaster" { fileinto "inbox.postmaster"; stop; }\nif envelope :detail :is "to" "mta-filters" { fileinto "inbox.ietf-mta-filters"; stop; }'],
  ['RFC 5173 §7 body', 'require ["body", "fileinto"];\nif body :content "text" :contains "MAKE MONEY FAST" { discard; }\nif body :raw :contains "MAKE MONEY FAST" { discard; }'],
  ['RFC 5260 §7 date', 'require ["date", "relational", "fileinto"];\nif allof(header :is "from" "boss@example.com", date :value "ge" :originalzone "date" "hour" "09", date :value "lt" :originalzone "date" "hour" "17") { fileinto "urgent"; }'],
  ['RFC 5293 §9 editheader', 'require ["editheader"];\naddheader "X-Hello" "World";\ndeleteheader :index 1 "X-Hello";'],
  ['RFC 5429 §2.2 reject', 'require ["reject"];\nif header :contains "from" "coyote@desert.example.org" { reject text:\nI am not taking mail from you, and I don\'t\nwant your birdseed, either!\n.\n; }'],
  ['RFC 5703 §3 foreverypart', 'require ["foreverypart", "mime", "fileinto"];\nforeverypart { if header :mime :param "filename" :matches "Content-Disposition" "*.exe" { fileinto "INBOX.executable"; break; } }'],
  ['RFC 6609 include', 'require ["include"];\ninclude :personal "always_allow";\ninclude :global "spam_tests";'],
  ['RFC 5463 ihave guards an unknown extension', 'require "ihave";\nif ihave "frobnicate" { frobnicate "x"; }'],
  ['RFC 7352 duplicate', 'require ["duplicate", "fileinto", "mailbox"];\nif duplicate { fileinto :create "Trash/Duplicate"; }'],
  ['RFC 5235 spamtest', 'require ["spamtest", "fileinto", "relational", "comparator-i;ascii-numeric"];\nif spamtest :value "eq" :comparator "i;ascii-numeric" "0" { fileinto "INBOX.unclassified"; }'],
];

describe('sieve scripts that must compile', () => {
  for (const [name, text] of GOOD) {
    it(name, () => {
      const r = compile(text);
      assert.ok(r.ok, r.ok ? '' : JSON.stringify(r.errors));
    });
  }
});
