// ManageSieve end to end with a real client: Debian's sieve-connect against `postern start`
// (STARTTLS with the self-signed certificate, AUTHENTICATE PLAIN): upload, list, activate,
// download, and an invalid script refused with its error. Needs the sieve-connect package
// (.ci/run installs it).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDaemon, removeDir, type RunningDaemon } from '../helpers/daemon.js';
import { runCommand, type CommandResult } from '../helpers/run-command.js';

const USER = 'alice@example.test';
const PASSWORD = 'correct horse';

function haveSieveConnect(): boolean {
  return spawnSync('sieve-connect', ['--version'], { stdio: 'ignore' }).error === undefined;
}

/** Runs sieve-connect with the password on stdin (--passwordfd 0). */
function sieveConnect(port: number, args: string[]): Promise<CommandResult> {
  return runCommand('sieve-connect', ['--server', '127.0.0.1', '--port', String(port), '--nosrv', '--notlsverify', '--user', USER, '--passwordfd', '0', ...args], { input: `${PASSWORD}\n` });
}

describe('ManageSieve with sieve-connect', () => {
  let d: RunningDaemon;
  let work: string;

  before(async () => {
    assert.ok(haveSieveConnect(), 'sieve-connect is not installed (apt-get install sieve-connect; .ci/run does it)');
    d = await startDaemon({ listen: { lmtp: { host: '127.0.0.1', port: 0 }, managesieve: { host: '127.0.0.1', port: 0 } } });
    const added = await d.cli(['user', 'add', USER, '--password-stdin'], `${PASSWORD}\n`);
    assert.equal(added.code, 0, added.stderr);
    work = await mkdtemp(join(tmpdir(), 'postern-sieve-connect-'));
  });

  after(async () => {
    await d?.stop();
    if (d) await removeDir(d.dir);
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('uploads, lists, activates and downloads a script', async () => {
    const port = d.ports.managesieve!;
    const script = 'require ["fileinto"];\nif header :contains "Subject" "[list]" {\n  fileinto "Lists";\n}\n';
    await writeFile(join(work, 'filters.sieve'), script);

    const up = await sieveConnect(port, ['--upload', '--localsieve', join(work, 'filters.sieve'), '--remotesieve', 'filters']);
    assert.equal(up.code, 0, up.stderr);
    const act = await sieveConnect(port, ['--activate', '--remotesieve', 'filters']);
    assert.equal(act.code, 0, act.stderr);
    const list = await sieveConnect(port, ['--list']);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^"filters" ACTIVE$/m);
    const out = join(work, 'back.sieve');
    const down = await sieveConnect(port, ['--download', '--remotesieve', 'filters', '--localsieve', out]);
    assert.equal(down.code, 0, down.stderr);
    assert.equal(await readFile(out, 'utf8'), script);
  });

  it('an invalid script is refused with its error and not stored', async () => {
    const port = d.ports.managesieve!;
    await writeFile(join(work, 'broken.sieve'), 'keep;\nfilein "Lists";\n');
    const up = await sieveConnect(port, ['--upload', '--localsieve', join(work, 'broken.sieve'), '--remotesieve', 'broken']);
    assert.notEqual(up.code, 0);
    assert.match(up.stderr, /PUTSCRIPT\(broken\) failed: NO "line 2: [^"]*filein/);
    const list = await sieveConnect(port, ['--list']);
    assert.doesNotMatch(list.stdout, /broken/);
  });
});
