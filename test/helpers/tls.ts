// A self-signed certificate for tests (selfsigned v5: async generate), made once per process.
import { generate } from 'selfsigned';

let cached: Promise<{ key: string; cert: string }> | null = null;

export function testTls(): Promise<{ key: string; cert: string }> {
  cached ??= generate([{ name: 'commonName', value: 'mx.example.test' }], {
    keySize: 2048,
    algorithm: 'sha256',
    extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: 'mx.example.test' }, { type: 7, ip: '127.0.0.1' }] }],
  }).then((p) => ({ key: p.private, cert: p.cert }));
  return cached;
}
