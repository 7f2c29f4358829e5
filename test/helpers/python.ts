// Runs a Python 3 snippet (an independent client: smtplib, mailbox, imaplib, poplib) and returns
// what it printed. The snippet gets its arguments as sys.argv[1:]; by convention it prints JSON.
import { spawn } from 'node:child_process';

export async function python(script: string, args: string[] = [], opts: { timeoutMs?: number; input?: string } = {}): Promise<string> {
  return new Promise((res, rej) => {
    const p = spawn('python3', ['-c', script, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    p.stdout.on('data', (c: Buffer) => (out += c.toString()));
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    p.on('error', (e) => {
      clearTimeout(timer);
      rej(new Error(`python3 could not be started (is it installed?): ${e.message}`));
    });
    p.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) res(out);
      else rej(new Error(`python3 exited with ${code}: ${err || out}`));
    });
    p.stdin.end(opts.input ?? '');
  });
}

export async function pythonJson<T = unknown>(script: string, args: string[] = [], opts: { timeoutMs?: number; input?: string } = {}): Promise<T> {
  return JSON.parse(await python(script, args, opts)) as T;
}

/** Reads every message of a Maildir (optionally a Maildir++ folder) with Python's mailbox module. */
export const READ_MAILDIR = `
import mailbox, sys, json
md = mailbox.Maildir(sys.argv[1], factory=None, create=False)
if len(sys.argv) > 2 and sys.argv[2]:
    md = md.get_folder(sys.argv[2])
out = []
for key in sorted(md.keys()):
    m = md.get_message(key)
    out.append({"key": key, "bytes": md.get_bytes(key).decode("latin-1"), "flags": m.get_flags(), "subdir": m.get_subdir()})
print(json.dumps(out))
`;

/** Reads every message of an mbox with Python's mailbox module: the From_ line and the bytes. */
export const READ_MBOX = `
import mailbox, sys, json
mb = mailbox.mbox(sys.argv[1], create=False)
out = []
for key in mb.keys():
    m = mb.get_message(key)
    out.append({"from_": m.get_from(), "bytes": mb.get_bytes(key).decode("latin-1")})
print(json.dumps(out))
`;
