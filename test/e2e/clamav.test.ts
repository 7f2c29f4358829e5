// End to end with a real clamd: `postern start` with the clamav plugin and a gateway Sieve script
// that reads virustest, messages sent with nodemailer. EICAR in a base64 attachment is refused at
// DATA naming the signature; a clean message is delivered with X-Virus-Status: clean and the
// Sieve virustest value of the scan; with clamd stopped the client gets 451 4.3.0 and nothing is
// stored, and the same message sent again once clamd is back is delivered (nothing was lost).
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readMaildir, waitFor } from '../helpers/wait.js';
import { startAliceGateway, type AliceGateway } from '../helpers/alice-gateway.js';
import { EICAR, EICAR_FOUND, startClamd, type RunningClamd } from '../helpers/clamd.js';

const RULES = `require ["virustest", "editheader"];
if virustest "1" { addheader "X-Gateway-Virustest" "1"; }
`;

describe('clamav end to end', () => {
  let clamd: RunningClamd;
  let g: AliceGateway;
  const send = (subject: string, attachments: { filename: string; content: string }[] = []) => g.send(subject, { text: 'Hello.', attachments });

  before(async () => {
    clamd = await startClamd();
    const dir = await mkdtemp(join(tmpdir(), 'postern-e2e-clamav-'));
    await mkdir(join(dir, 'rules'));
    await writeFile(join(dir, 'rules', 'gateway.sieve'), RULES);
    g = await startAliceGateway({ plugins: ['relay-acl', { clamav: { host: '127.0.0.1', port: clamd.port } }, { sieve: { scripts: ['rules/gateway.sieve'] } }] }, { dir });
  });
  after(async () => {
    await g?.stop();
    await clamd?.close();
  });

  it('refuses EICAR in a base64 attachment with 554 5.7.1 naming the signature', async () => {
    await assert.rejects(send('infected', [{ filename: 'eicar.com', content: EICAR }]), (e: { response?: string }) => {
      assert.equal(e.response, `554 5.7.1 Message refused: virus found (${EICAR_FOUND})`);
      return true;
    });
  });

  it('delivers a clean message with X-Virus-Status: clean and virustest 1 seen by Sieve', async () => {
    const info = await send('clean', [{ filename: 'notes.txt', content: 'nothing to see' }]);
    assert.match(info.response, /^250 /);
    const got = await waitFor(() => readMaildir(g.d, 'alice'), (m) => m.some((x) => x.bytes.includes('Subject: clean')));
    const m = got.find((x) => x.bytes.includes('Subject: clean'));
    assert.ok(m, 'delivered');
    assert.match(m.bytes, /^X-Virus-Status: clean$/m);
    assert.match(m.bytes, /^X-Gateway-Virustest: 1$/m);
    assert.ok(!got.some((x) => x.bytes.includes('Subject: infected')));
  });

  it('clamd stopped: 451 4.3.0, nothing stored; sent again once clamd is back, it is delivered', async () => {
    await clamd.stop();
    try {
      await assert.rejects(send('retry-me'), (e: { response?: string; responseCode?: number }) => {
        assert.equal(e.response, '451 4.3.0 Policy check unavailable');
        return true;
      });
    } finally {
      await clamd.start();
    }
    const before = await readMaildir(g.d, 'alice');
    assert.ok(!before.some((x) => x.bytes.includes('Subject: retry-me')), 'not delivered while clamd was down');
    // The queue holds nothing for it either: the 451 came before anything was spooled.
    const q = await g.d.cli(['queue', 'list']);
    assert.equal(q.code, 0, q.stderr);
    assert.equal(q.stdout.trim(), 'queue is empty');
    // The client retries (as any MTA does after a 4yz) and the message arrives.
    const info = await send('retry-me');
    assert.match(info.response, /^250 /);
    const got = await waitFor(() => readMaildir(g.d, 'alice'), (m) => m.some((x) => x.bytes.includes('Subject: retry-me')));
    assert.ok(got.some((x) => x.bytes.includes('Subject: retry-me') && /^X-Virus-Status: clean$/m.test(x.bytes)));
  });
});
