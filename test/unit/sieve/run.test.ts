// Interpreter: table-driven runs covering every action, match type, comparator, address part and
// the extensions, against messages with folded and RFC 2047-encoded headers, groups, display
// names, 8-bit data and multipart bodies. Expected results are written as summary() strings.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BASIC, msg, runScript, summary } from './harness.js';

const R = 'require ["fileinto","reject","ereject","envelope","imap4flags","variables","body","relational","comparator-i;ascii-numeric","subaddress","copy","regex","mailbox","editheader","date","index","spamtest","spamtestplus","virustest","environment","duplicate","ihave","mime","foreverypart","extracttext","vacation","vacation-seconds"];\n';

const FOLDED = msg([
  'From: =?UTF-8?B?SsO8cmdlbg==?= <juergen@example.de>',
  'To: group-name: a@example.com, "B, Person" <b@example.com>;, c@example.com (comment)',
  'Subject: =?ISO-8859-1?Q?Gr=FC=DFe?= aus',
  ' Berlin',
  'X-Long: first',
  '\tsecond',
  'X-Empty:',
  'X-Num: 42',
]);

const MULTI = msg(
  [
    'From: a@example.com',
    'To: user@example.org',
    'Subject: parts',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="XX"',
  ],
  [
    'preamble',
    '--XX',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: quoted-printable',
    '',
    'Caf=C3=A9 MAKE MONEY FAST',
    '--XX',
    'Content-Type: text/html',
    '',
    '<p>Hello <b>html</b> world</p>',
    '--XX',
    'Content-Type: application/octet-stream',
    'Content-Disposition: attachment; filename="evil.exe"',
    'Content-Transfer-Encoding: base64',
    '',
    Buffer.from('MZ binary secret').toString('base64'),
    '--XX--',
    'epilogue',
    '',
  ].join('\r\n'),
);

type Case = [name: string, script: string, want: string, message?: string];

const CASES: Case[] = [
  // RFC 5228 §2.10.2 implicit keep and the base actions
  ['empty script keeps implicitly', '', 'implicit'],
  ['keep', 'keep;', 'keep'],
  ['discard cancels implicit keep', 'discard;', 'discard'],
  ['discard then keep: keep wins', 'discard; keep;', 'discard keep'],
  ['redirect', 'redirect "alice@example.net";', 'redirect:alice@example.net'],
  ['redirect with display name normalised', 'redirect "Alice <alice@example.net>";', 'redirect:alice@example.net'],
  ['redirect duplicate collapses (§4)', 'redirect "a@example.net"; redirect "A@example.net";', 'redirect:a@example.net'],
  ['redirect :copy keeps implicit keep (RFC 3894)', R + 'redirect :copy "a@example.net";', 'redirect:a@example.net:copy implicit'],
  ['fileinto', R + 'fileinto "Archive";', 'fileinto:Archive'],
  ['fileinto :copy', R + 'fileinto :copy "Archive";', 'fileinto:Archive:copy implicit'],
  ['fileinto twice into one mailbox (§4)', R + 'fileinto "A"; fileinto "A";', 'fileinto:A'],
  ['keep and fileinto INBOX are one action (§4)', R + 'keep; fileinto "INBOX";', 'keep'],
  ['fileinto INBOX :copy replaces implicit keep', R + 'fileinto :copy "INBOX";', 'fileinto:INBOX:copy'],
  ['stop ends the script', R + 'fileinto "A"; stop; fileinto "B";', 'fileinto:A'],
  ['reject', R + 'reject "go away";', 'reject:go away'],
  ['ereject', R + 'ereject "go away";', 'ereject:go away'],
  ['reject + fileinto is a runtime error (RFC 5429)', R + 'reject "no"; fileinto "A";', 'ERROR implicit'],
  ['keep + reject is a runtime error', R + 'keep; reject "no";', 'ERROR implicit'],
  ['two rejects are a runtime error', R + 'reject "a"; ereject "b";', 'ERROR implicit'],
  ['reject + discard is allowed', R + 'discard; reject "no";', 'discard reject:no'],
  ['too many redirects (limit 4)', 'redirect "a@x.example"; redirect "b@x.example"; redirect "c@x.example"; redirect "d@x.example"; redirect "e@x.example";', 'ERROR implicit'],
  ['four redirects are fine', 'redirect "a@x.example"; redirect "b@x.example"; redirect "c@x.example"; redirect "d@x.example";', 'redirect:a@x.example redirect:b@x.example redirect:c@x.example redirect:d@x.example'],
  ['error command (ihave) is a runtime error', R + 'fileinto "A"; error "broken";', 'ERROR implicit'],
  // control flow
  ['if/elsif/else takes the first true branch', R + 'if false { fileinto "1"; } elsif true { fileinto "2"; } else { fileinto "3"; }', 'fileinto:2'],
  ['else runs when nothing matched', R + 'if false { fileinto "1"; } elsif false { fileinto "2"; } else { fileinto "3"; }', 'fileinto:3'],
  ['allof is false when one is false', 'if allof (true, false) { discard; }', 'implicit'],
  ['anyof is true when one is true', 'if anyof (false, true) { discard; }', 'discard'],
  ['not', 'if not false { discard; }', 'discard'],
  // header test, match types, comparators (RFC 5228 §2.7)
  ['header :is is case-insensitive by default', 'if header :is "subject" "[ACME-USERS] [fwd] version 1.0 is out" { discard; }', 'discard'],
  ['header :is i;octet is case-sensitive', 'if header :is :comparator "i;octet" "subject" "[ACME-USERS] [fwd] version 1.0 is out" { discard; }', 'implicit'],
  ['header :contains', 'if header :contains "Subject" "version 1.0" { discard; }', 'discard'],
  ['header :contains empty key matches any value', 'if header :contains "Subject" "" { discard; }', 'discard'],
  ['header :contains on a missing header is false', 'if header :contains "X-None" "" { discard; }', 'implicit'],
  ['header :matches *', 'if header :matches "Subject" "*version*" { discard; }', 'discard'],
  ['header :matches ? counts one character', 'if header :matches "Message-ID" "<?@example.com>" { discard; }', 'discard'],
  ['header :matches escaped wildcard', 'if header :matches "Subject" "\\\\[acme*" { discard; }', 'discard'],
  ['header :matches escaped * is literal', 'if header :matches "Subject" "*\\\\**" { discard; }', 'implicit'],
  ['header :regex', R + 'if header :regex "Subject" "^\\\\[[a-z-]+\\\\]" { discard; }', 'discard'],
  ['header :regex POSIX class', R + 'if header :regex "Subject" "[[:digit:]]\\\\.[[:digit:]]" { discard; }', 'discard'],
  ['header list of names and keys', 'if header :contains ["X-None", "Subject"] ["nope", "acme"] { discard; }', 'discard'],
  ['header on an empty field value', 'if header :is "X-Empty" "" { discard; }', 'discard', FOLDED],
  ['folded header is unfolded', 'if header :is "X-Long" "first\\tsecond" { discard; }', 'implicit', FOLDED],
  ['folded header unfolded keeps the whitespace', 'if header :matches "X-Long" "first*second" { discard; }', 'discard', FOLDED],
  ['RFC 2047 encoded subject is decoded', 'if header :is "Subject" "Grüße aus Berlin" { discard; }', 'discard', FOLDED],
  ['8-bit key matches decoded text', 'if header :contains "From" "Jürgen" { discard; }', 'discard', FOLDED],
  ['i;ascii-casemap does not fold non-ASCII', 'if header :contains "Subject" "GRÜSSE" { discard; }', 'implicit', FOLDED],
  ['i;ascii-numeric :is', R + 'if header :is :comparator "i;ascii-numeric" "X-Num" "042" { discard; }', 'discard', FOLDED],
  ['exists', 'if exists ["From", "Subject"] { discard; }', 'discard'],
  ['exists needs all', 'if exists ["From", "X-None"] { discard; }', 'implicit'],
  ['size :over', 'if size :over 10 { discard; }', 'discard'],
  ['size :under', 'if size :under 10 { discard; }', 'implicit'],
  ['size :over 1K false', 'if size :over 1K { discard; }', 'implicit'],
  // address test (RFC 5228 §5.1) with groups, display names, comments
  ['address :all ignores the display name', 'if address :is "from" "joe+news@example.com" { discard; }', 'discard'],
  ['address :localpart', 'if address :localpart :is "from" "joe+news" { discard; }', 'discard'],
  ['address :domain', 'if address :domain :is "from" "EXAMPLE.com" { discard; }', 'discard'],
  ['address :user (RFC 5233)', R + 'if address :user :is "from" "joe" { discard; }', 'discard'],
  ['address :detail (RFC 5233)', R + 'if address :detail :is "from" "news" { discard; }', 'discard'],
  ['address :detail without separator does not match', R + 'if address :detail :matches "to" "*" { discard; }', 'implicit'],
  ['address in a display name with a comma', 'if address :is "to" "other@example.net" { discard; }', 'discard'],
  ['address inside a group', 'if address :is "to" "b@example.com" { discard; }', 'discard', FOLDED],
  ['group name is not an address', 'if address :contains "to" "group-name" { discard; }', 'implicit', FOLDED],
  ['address with a trailing comment', 'if address :is "to" "c@example.com" { discard; }', 'discard', FOLDED],
  ['empty group has no addresses', R + 'if address :count "eq" :comparator "i;ascii-numeric" "cc" "0" { discard; }', 'discard'],
  // relational (RFC 5231)
  ['count of To addresses', R + 'if address :count "eq" :comparator "i;ascii-numeric" "to" "2" { discard; }', 'discard'],
  ['count of Received headers', R + 'if header :count "ge" :comparator "i;ascii-numeric" "received" "2" { discard; }', 'discard'],
  ['value gt numeric', R + 'if header :value "gt" :comparator "i;ascii-numeric" "x-num" "41" { discard; }', 'discard', FOLDED],
  ['value lt numeric false', R + 'if header :value "lt" :comparator "i;ascii-numeric" "x-num" "41" { discard; }', 'implicit', FOLDED],
  ['value ne', R + 'if header :value "ne" :comparator "i;ascii-numeric" "x-num" "41" { discard; }', 'discard', FOLDED],
  ['value le string order', R + 'if header :value "le" "from" "!" { discard; }', 'implicit'],
  ['non-numeric is positive infinity', R + 'if header :value "gt" :comparator "i;ascii-numeric" "subject" "99999" { discard; }', 'discard'],
  // envelope (RFC 5228 §5.4)
  ['envelope from', R + 'if envelope :is "from" "sender@example.com" { discard; }', 'discard'],
  ['envelope to :domain', R + 'if envelope :domain :is "to" "example.org" { discard; }', 'discard'],
  ['envelope to :detail', R + 'if envelope :detail "to" "lists" { discard; }', 'implicit'],
  // variables (RFC 5229)
  ['match variables from :matches (RFC 5229 §3.2)', R + 'if header :matches "Subject" "[*] *" { fileinto "${1}"; }', 'fileinto:acme-users'],
  ['${0} is the whole match', R + 'if header :matches "Message-ID" "<*>" { fileinto "${0}"; }', 'fileinto:<1@example.com>'],
  ['regex groups as match variables', R + 'if header :regex "from" "<([a-z]+)\\\\+([a-z]+)@" { fileinto "${2}-${1}"; }', 'fileinto:news-joe'],
  ['set and expand', R + 'set "box" "Lists"; fileinto "${box}.acme";', 'fileinto:Lists.acme'],
  ['variable names are case-insensitive', R + 'set "Box" "X"; fileinto "${BOX}";', 'fileinto:X'],
  ['unknown variable is empty', R + 'fileinto "a${nothing}b";', 'fileinto:ab'],
  ['bad reference kept verbatim', R + 'fileinto "a${bad name}b";', 'fileinto:a${bad name}b'],
  [':lower', R + 'set :lower "v" "HeLLo"; fileinto "${v}";', 'fileinto:hello'],
  [':upper', R + 'set :upper "v" "HeLLo"; fileinto "${v}";', 'fileinto:HELLO'],
  [':lowerfirst', R + 'set :lowerfirst "v" "HeLLo"; fileinto "${v}";', 'fileinto:heLLo'],
  [':upperfirst with :lower (precedence)', R + 'set :upperfirst :lower "v" "hELLO"; fileinto "${v}";', 'fileinto:Hello'],
  [':length', R + 'set :length "v" "héllo"; fileinto "${v}";', 'fileinto:5'],
  [':quotewildcard', R + 'set :quotewildcard "v" "a*b?c\\\\d"; fileinto "${v}";', 'fileinto:a\\*b\\?c\\\\d'],
  [':quoteregex', R + 'set :quoteregex "v" "a.b"; if string :regex "axb" "${v}" { discard; }', 'implicit'],
  ['string test', R + 'set "a" "hello"; if string :is "${a}" "hello" { discard; }', 'discard'],
  ['string :count ignores empty strings', R + 'if string :count "eq" :comparator "i;ascii-numeric" ["a", "", "b"] "2" { discard; }', 'discard'],
  ['expansion is not recursive', R + 'set "b" "$"; set "a" "${b}{c}"; set "c" "X"; fileinto "${a}";', 'fileinto:${c}'],
  // imap4flags (RFC 5232)
  ['setflag affects implicit keep', R + 'setflag "\\\\Seen";', 'implicit[\\Seen]'],
  ['addflag and removeflag', R + 'addflag ["\\\\Seen", "\\\\Flagged"]; removeflag "\\\\Seen";', 'implicit[\\Flagged]'],
  ['addflag space-separated list, duplicates collapse', R + 'addflag "A B"; addflag "b C";', 'implicit[A B C]'],
  ['keep uses the internal variable', R + 'addflag "\\\\Seen"; keep;', 'keep[\\Seen]'],
  ['fileinto :flags overrides', R + 'addflag "\\\\Seen"; fileinto :flags "\\\\Flagged" "A";', 'fileinto:A[\\Flagged]'],
  ['hasflag', R + 'setflag "\\\\Seen"; if hasflag :is "\\\\seen" { discard; }', 'discard'],
  ['hasflag with a variable', R + 'setflag "f" "X Y"; if hasflag :is "f" "Y" { discard; }', 'discard'],
  ['hasflag :count', R + 'setflag "A B C"; if hasflag :count "eq" :comparator "i;ascii-numeric" "3" { discard; }', 'discard'],
  // body (RFC 5173)
  ['body :text default', R + 'if body :contains "MAKE MONEY" { discard; }', 'discard', MULTI],
  ['body :text decodes quoted-printable', R + 'if body :contains "Café" { discard; }', 'discard', MULTI],
  ['body :text strips HTML tags', R + 'if body :contains "Hello html world" { discard; }', 'implicit', MULTI],
  ['body :text html words', R + 'if body :matches "*html*world*" { discard; }', 'discard', MULTI],
  ['body :raw sees the encoding', R + 'if body :raw :contains "Caf=C3=A9" { discard; }', 'discard', MULTI],
  ['body :content type filter', R + 'if body :content "application" :contains "secret" { discard; }', 'discard', MULTI],
  ['body :content text excludes the attachment', R + 'if body :content "text" :contains "secret" { discard; }', 'implicit', MULTI],
  ['body of a plain message', R + 'if body :is "Hello\\r\\n" { discard; }', 'implicit'],
  ['body :contains plain', R + 'if body :contains "Hello" { discard; }', 'discard'],
  // mime / foreverypart (RFC 5703)
  ['foreverypart with :mime :param', R + 'foreverypart { if header :mime :param "filename" :matches "Content-Disposition" "*.exe" { fileinto "Exe"; break; } }', 'fileinto:Exe', MULTI],
  ['header :mime :type on the top level', R + 'if header :mime :type "Content-Type" "multipart" { discard; }', 'discard', MULTI],
  ['header :mime :anychild :subtype', R + 'if header :mime :anychild :subtype "Content-Type" "html" { discard; }', 'discard', MULTI],
  ['extracttext', R + 'foreverypart { if header :mime :subtype "Content-Type" "plain" { extracttext :first 4 "t"; } } fileinto "${t}";', 'fileinto:Café', MULTI],
  ['foreverypart named break', R + 'foreverypart :name "outer" { foreverypart { fileinto "inner"; } if true { break :name "outer"; } fileinto "never"; }', 'implicit', MULTI],
  // editheader (RFC 5293)
  ['addheader is reported in stored', R + 'addheader "X-Tag" "1"; fileinto "A";', 'fileinto:A'],
  // spamtest / virustest (RFC 5235) from the configured header (X-Spam-Score 7.5 of 10)
  ['spamtest value from header', R + 'if spamtest :value "ge" :comparator "i;ascii-numeric" "8" { fileinto "Junk"; }', 'fileinto:Junk'],
  ['spamtest below threshold', R + 'if spamtest :value "ge" :comparator "i;ascii-numeric" "9" { fileinto "Junk"; }', 'implicit'],
  ['spamtestplus :percent', R + 'if spamtest :percent :value "eq" :comparator "i;ascii-numeric" "75" { fileinto "Junk"; }', 'fileinto:Junk'],
  ['spamtest 0 when not tested', R + 'if spamtest :is "0" { fileinto "Untested"; }', 'fileinto:Untested', FOLDED],
  ['virustest 0 when not tested', R + 'if virustest :is "0" { fileinto "Untested"; }', 'fileinto:Untested'],
  ['virustest from header mapping', R + 'if virustest :value "ge" :comparator "i;ascii-numeric" "5" { discard; }', 'discard', msg(['X-Virus-Status: infected', 'Subject: x'])],
  // date / index (RFC 5260)
  ['date :originalzone hour', R + 'if date :originalzone :is "date" "hour" "17" { discard; }', 'discard'],
  ['date :zone +0000 converts', R + 'if date :zone "+0000" :is "date" "time" "00:41:40" { discard; }', 'discard'],
  ['date :zone date part crosses midnight', R + 'if date :zone "+0000" :is "date" "date" "2005-07-09" { discard; }', 'discard'],
  ['date weekday', R + 'if date :originalzone :is "date" "weekday" "5" { discard; }', 'discard'],
  ['date iso8601', R + 'if date :originalzone :is "date" "iso8601" "2005-07-08T17:41:40-07:00" { discard; }', 'discard'],
  ['date std11', R + 'if date :originalzone :is "date" "std11" "Fri, 08 Jul 2005 17:41:40 -0700" { discard; }', 'discard'],
  ['date julian', R + 'if date :originalzone :is "date" "julian" "53559" { discard; }', 'discard'],
  ['date zone part', R + 'if date :originalzone :is "date" "zone" "-0700" { discard; }', 'discard'],
  ['date from Received after ";"', R + 'if date :originalzone :is "received" "second" "45" { discard; }', 'discard'],
  ['index picks the second Received', R + 'if date :index 2 :originalzone :is "received" "second" "42" { discard; }', 'discard'],
  ['index :last', R + 'if header :index 1 :last :contains "received" "from c" { discard; }', 'discard'],
  ['date on a missing header is false', R + 'if date :is "x-none" "year" "2005" { discard; }', 'implicit'],
  ['currentdate year is four digits', R + 'if currentdate :matches "year" "2???" { discard; }', 'discard'],
  // environment, ihave, mailbox, duplicate
  ['environment name', R + 'if environment :is "name" "Postern" { discard; }', 'discard'],
  ['environment unknown item is false', R + 'if environment :contains "frob" "" { discard; }', 'implicit'],
  ['ihave known', R + 'if ihave "fileinto" { discard; }', 'discard'],
  ['ihave unknown', R + 'if ihave "frobnicate" { frobnicate; } else { fileinto "no"; }', 'fileinto:no'],
  ['mailboxexists INBOX only by default', R + 'if mailboxexists "INBOX" { fileinto "a"; } if mailboxexists "Other" { fileinto "b"; }', 'fileinto:a'],
  ['fileinto :create', R + 'fileinto :create "New";', 'fileinto:New'],
  ['duplicate without host memory is false', R + 'if duplicate { discard; }', 'implicit'],
  // vacation (RFC 5230/6131)
  ['vacation does not cancel implicit keep', R + 'vacation "away";', 'vacation implicit'],
  ['second vacation is an error', R + 'vacation "a"; vacation :handle "x" "b";', 'ERROR implicit'],
];

describe('sieve run', () => {
  for (const [name, script, want, message] of CASES) {
    it(name, async () => {
      const r = await runScript(script, message ?? BASIC);
      assert.equal(summary(r), want, JSON.stringify(r.errors));
    });
  }
});
