// Envelope address parsing: valid shapes, every relay trick, and malformed input (table-driven).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseAddress, domainOf, AddressError, type AddressTrick } from '../../../src/address/address.js';

const valid: [input: string, local: string, domain: string, address: string, tricks: AddressTrick[]][] = [
  ['user@example.test', 'user', 'example.test', 'user@example.test', []],
  ['<user@example.test>', 'user', 'example.test', 'user@example.test', []],
  ['  user@example.test  ', 'user', 'example.test', 'user@example.test', []],
  ['User.Name+tag@Example.TEST', 'User.Name+tag', 'example.test', 'User.Name+tag@example.test', []],
  ["o'brien!#$&*/=?^_`{|}~-@example.test", "o'brien!#$&*/=?^_`{|}~-", 'example.test', "o'brien!#$&*/=?^_`{|}~-@example.test", ['bang-path']],
  ['"plain"@example.test', 'plain', 'example.test', 'plain@example.test', []],
  ['"with space"@example.test', 'with space', 'example.test', '"with space"@example.test', []],
  ['"q\\"uote\\\\d"@example.test', 'q"uote\\d', 'example.test', '"q\\"uote\\\\d"@example.test', []],
  ['"..dots.."@example.test', '..dots..', 'example.test', '"..dots.."@example.test', []],
  // The tricks.
  ['user%evil.example@local.test', 'user%evil.example', 'local.test', 'user%evil.example@local.test', ['percent-hack']],
  ['evil.example!user@local.test', 'evil.example!user', 'local.test', 'evil.example!user@local.test', ['bang-path']],
  ['"user@evil.example"@local.test', 'user@evil.example', 'local.test', '"user@evil.example"@local.test', ['quoted-at']],
  ['"user%evil"@local.test', 'user%evil', 'local.test', 'user%evil@local.test', ['percent-hack']],
  ['@local.test:user@evil.example', 'user', 'evil.example', 'user@evil.example', ['source-route']],
  ['@a.test,@b.test:user@evil.example', 'user', 'evil.example', 'user@evil.example', ['source-route']],
  ['user@[192.0.2.1]', 'user', '[192.0.2.1]', 'user@[192.0.2.1]', ['ip-literal']],
  ['user@[IPv6:2001:DB8:0:0::1]', 'user', '[IPv6:2001:db8::1]', 'user@[IPv6:2001:db8::1]', ['ip-literal']],
  ['user@evil.example.', 'user', 'evil.example', 'user@evil.example', ['trailing-dot']],
  ['USER%EVIL.EXAMPLE@LOCAL.TEST', 'USER%EVIL.EXAMPLE', 'local.test', 'USER%EVIL.EXAMPLE@local.test', ['percent-hack']],
  ['@x.test:a%b!c@[10.0.0.1]', 'a%b!c', '[10.0.0.1]', 'a%b!c@[10.0.0.1]', ['source-route', 'percent-hack', 'bang-path', 'ip-literal']],
  // UTF-8 (RFC 6531).
  ['用户@例子.测试', '用户', '例子.测试', '用户@例子.测试', []],
  ['Jöran@BÜCHER.test', 'Jöran', 'bücher.test', 'Jöran@bücher.test', []],
];

test('valid addresses: local, domain, canonical form, tricks', () => {
  for (const [input, local, domain, address, tricks] of valid) {
    const p = parseAddress(input);
    assert.deepEqual({ local: p.local, domain: p.domain, address: p.address, tricks: p.tricks }, { local, domain, address, tricks }, input);
    // The canonical form parses back to itself.
    assert.equal(parseAddress(p.address).address, p.address, `round trip of ${input}`);
  }
});

test('domainAscii gives A-labels for UTF-8 domains', () => {
  assert.equal(parseAddress('a@bücher.test').domainAscii, 'xn--bcher-kva.test');
  assert.equal(parseAddress('a@Example.TEST').domainAscii, 'example.test');
  assert.equal(parseAddress('a@[192.0.2.1]').domainAscii, '[192.0.2.1]');
});

const invalid: [input: string, reason: RegExp][] = [
  ['', /local@domain/],
  ['@example.test', /source route|local@domain/],
  ['user', /local@domain/],
  ['user@', /empty domain/],
  ['user@evil.example@local.test', /unquoted @/],
  ['.user@example.test', /dots/],
  ['user.@example.test', /dots/],
  ['us..er@example.test', /dots/],
  ['us er@example.test', /invalid character/],
  ['us\\er@example.test', /invalid character/],
  ['us"er@example.test', /invalid character/],
  ['us(er)@example.test', /invalid character/],
  ['"unterminated@example.test', /unterminated/],
  ['"a"b@example.test', /expected @/],
  ['"a\\"@example.test', /unterminated/],
  ['""@example.test', /empty local part/],
  ['user@exa mple.test', /invalid domain/],
  ['user@.example.test', /invalid domain/],
  ['user@example..test', /invalid domain/],
  ['user@example.test..', /invalid domain/],
  ['user@-example.test', /invalid domain/],
  ['user@example-.test', /invalid domain/],
  ['user@ex_ample.test', /invalid domain/],
  ['user@exa"mple.test', /invalid domain/],
  ['user@[192.0.2.1', /unterminated address literal/],
  ['user@[192.0.2.256]', /invalid address literal/],
  ['user@[0x7f.1]', /invalid address literal/],
  ['user@[127.1]', /invalid address literal/],
  ['user@[IPv6:zz::1]', /invalid IPv6/],
  ['user@[tag:whatever]', /invalid address literal/],
  ['user\u0000@example.test', /control character/],
  ['user@example.test\r\nRCPT TO:<x@y>', /control character/],
  ['@evil:', /local@domain|source route/],
  [`${'a'.repeat(65)}@example.test`, /local part longer than 64/],
  [`a@${'b'.repeat(64)}.test`, /invalid domain/],
  [`a@${Array.from({ length: 70 }, () => 'abc').join('.')}`, /longer than/],
  [`${'ä'.repeat(33)}@example.test`, /local part longer than 64 octets/],
];

test('malformed addresses throw AddressError with a reason', () => {
  for (const [input, reason] of invalid) {
    assert.throws(
      () => parseAddress(input),
      (e) => e instanceof AddressError && reason.test(e.reason),
      JSON.stringify(input),
    );
  }
});

test('domainOf returns the domain or null', () => {
  assert.equal(domainOf('a@Example.TEST.'), 'example.test');
  assert.equal(domainOf('nonsense'), null);
});

test('property: any parsed address round-trips through its canonical form, never with CR/LF', () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 80 }), fc.string({ maxLength: 30 }), (l, d) => {
      for (const input of [`${l}@${d}`, `"${l}"@${d}.test`]) {
        let p;
        try {
          p = parseAddress(input);
        } catch (e) {
          assert.ok(e instanceof AddressError);
          continue;
        }
        assert.ok(!/[\r\n\0]/.test(p.address));
        const again = parseAddress(p.address);
        assert.equal(again.address, p.address);
        assert.equal(again.domain, p.domain);
        assert.equal(again.local, p.local);
      }
    }),
    { numRuns: 2000 },
  );
});
