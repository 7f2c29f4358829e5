// The server certificate (src/tls/certs.ts): a self-signed pair made once under data_dir and
// reused, made again only when it no longer fits; configured files read and checked.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import { ConfigError } from '../../../src/config/errors.js';
import { loadOrCreateTls, readConfiguredTls, selfSignedPaths } from '../../../src/tls/certs.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'postern-tls-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('self-signed pair', () => {
  it('is made once under data_dir/tls with the hostname, key mode 0600, and reused', async () => {
    const dataDir = join(dir, 'a');
    const cfg = { data_dir: dataDir, hostname: 'mx.example.test', tls: undefined };
    const first = await loadOrCreateTls(cfg);
    const paths = selfSignedPaths(dataDir);
    assert.equal(first.selfSigned, true);
    assert.equal(first.keyFile, paths.key);
    assert.equal(first.certFile, join(dataDir, 'tls', 'self-signed.crt'));
    assert.equal(await readFile(paths.key, 'utf8'), first.key);
    assert.equal(await readFile(paths.cert, 'utf8'), first.cert);
    assert.equal((await stat(paths.key)).mode & 0o777, 0o600);

    const x = new X509Certificate(first.cert);
    assert.match(x.subject, /CN=mx\.example\.test/);
    assert.equal(x.subjectAltName, 'DNS:mx.example.test');
    assert.equal(x.checkHost('mx.example.test'), 'mx.example.test');
    assert.ok(new Date(x.validTo).getTime() > Date.now() + 365 * 86_400_000);
    // Usable by node's TLS as it stands.
    assert.doesNotThrow(() => createSecureContext({ key: first.key, cert: first.cert }));

    const mtime = (await stat(paths.cert)).mtimeMs;
    const second = await loadOrCreateTls(cfg);
    assert.equal(second.cert, first.cert);
    assert.equal(second.key, first.key);
    assert.equal((await stat(paths.cert)).mtimeMs, mtime, 'not rewritten');
  });

  it('is made again for another hostname', async () => {
    const dataDir = join(dir, 'b');
    const a = await loadOrCreateTls({ data_dir: dataDir, hostname: 'one.example.test', tls: undefined });
    const b = await loadOrCreateTls({ data_dir: dataDir, hostname: 'two.example.test', tls: undefined });
    assert.notEqual(a.cert, b.cert);
    assert.match(new X509Certificate(b.cert).subject, /CN=two\.example\.test/);
  });

  it('is made again once expired', async () => {
    const dataDir = join(dir, 'c');
    const cfg = { data_dir: dataDir, hostname: 'mx.example.test', tls: undefined };
    const a = await loadOrCreateTls(cfg);
    const later = new Date(Date.now() + 3000 * 86_400_000);
    const b = await loadOrCreateTls(cfg, later);
    assert.notEqual(a.cert, b.cert);
  });

  it('is made again when the key does not match the certificate (an interrupted write)', async () => {
    const dataDir = join(dir, 'd');
    const cfg = { data_dir: dataDir, hostname: 'mx.example.test', tls: undefined };
    const a = await loadOrCreateTls(cfg);
    const other = await loadOrCreateTls({ data_dir: join(dir, 'd2'), hostname: 'mx.example.test', tls: undefined });
    await writeFile(selfSignedPaths(dataDir).key, other.key);
    const b = await loadOrCreateTls(cfg);
    assert.notEqual(b.cert, a.cert);
    assert.doesNotThrow(() => createSecureContext({ key: b.key, cert: b.cert }));
  });

  it('works for an IP address as hostname', async () => {
    const t = await loadOrCreateTls({ data_dir: join(dir, 'e'), hostname: '127.0.0.1', tls: undefined });
    assert.equal(new X509Certificate(t.cert).subjectAltName, 'IP Address:127.0.0.1');
  });
});

describe('configured files', () => {
  it('are read and used as they are; nothing is generated', async () => {
    const src = await loadOrCreateTls({ data_dir: join(dir, 'src'), hostname: 'mx.example.test', tls: undefined });
    const files = join(dir, 'files');
    await mkdir(files);
    await writeFile(join(files, 'c.pem'), src.cert);
    await writeFile(join(files, 'k.pem'), src.key);
    const dataDir = join(dir, 'f');
    const t = await loadOrCreateTls({ data_dir: dataDir, hostname: 'other.example.test', tls: { cert: join(files, 'c.pem'), key: join(files, 'k.pem') } });
    assert.equal(t.selfSigned, false);
    assert.equal(t.cert, src.cert);
    await assert.rejects(stat(selfSignedPaths(dataDir).dir), /ENOENT/);
  });

  const bad = (name: string, cert: string | null, key: string | null, want: RegExp, wantPath: string) => {
    it(name, async () => {
      const src = await loadOrCreateTls({ data_dir: join(dir, 'src'), hostname: 'mx.example.test', tls: undefined });
      const other = await loadOrCreateTls({ data_dir: join(dir, 'src2'), hostname: 'mx.example.test', tls: undefined });
      const d = await mkdtemp(join(dir, 'bad-'));
      const fill = (s: string) => s.replace('CERT', src.cert).replace('KEY', src.key).replace('OTHERKEY', other.key);
      if (cert !== null) await writeFile(join(d, 'c.pem'), fill(cert));
      if (key !== null) await writeFile(join(d, 'k.pem'), fill(key));
      await assert.rejects(readConfiguredTls({ cert: join(d, 'c.pem'), key: join(d, 'k.pem') }), (e: unknown) => {
        assert.ok(e instanceof ConfigError, String(e));
        assert.equal(e.problems.length, 1);
        assert.equal(e.problems[0]!.path, wantPath);
        assert.match(e.problems[0]!.message, want);
        return true;
      });
    });
  };
  bad('a missing certificate file', null, 'KEY', /cannot read .*c\.pem: no such file/, 'tls.cert');
  bad('a missing key file', 'CERT', null, /cannot read .*k\.pem: no such file/, 'tls.key');
  bad('a certificate file without PEM', 'hello', 'KEY', /holds no PEM certificate/, 'tls.cert');
  bad('a key file without PEM', 'CERT', 'hello', /holds no PEM private key/, 'tls.key');
  bad('a key that does not match the certificate', 'CERT', 'OTHERKEY', /do not make a usable pair/, 'tls');
});
