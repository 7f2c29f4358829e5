// Reads mailboxes back with Python's `mailbox` module (an independent reader), returning each
// message's raw bytes. mbox: Python does not undo mboxrd quoting, so it is undone here in Python.
import { spawnSync } from 'node:child_process';

const SCRIPT = String.raw`
import sys, json, base64, mailbox, re
req = json.loads(sys.stdin.read())
out = []
if req['kind'] == 'maildir':
    md = mailbox.Maildir(req['path'], factory=None, create=False)
    box = md.get_folder(req['folder']) if req.get('folder') else md
    for key in sorted(box.keys()):
        out.append({'key': key, 'bytes': base64.b64encode(box.get_bytes(key)).decode(), 'subdir': box.get_message(key).get_subdir(), 'folders': md.list_folders()})
else:
    mb = mailbox.mbox(req['path'], create=False)
    for key in mb.keys():
        raw = mb.get_bytes(key)
        raw = re.sub(rb'(?m)^>(>*From )', rb'\1', raw)
        out.append({'key': key, 'bytes': base64.b64encode(raw).decode(), 'from': mb.get_message(key).get_from()})
print(json.dumps(out))
`;

export interface PyMessage {
  key: string;
  bytes: Buffer;
  subdir?: string;
  folders?: string[];
  from?: string;
}

export function readWithPython(kind: 'maildir' | 'mbox', path: string, folder?: string): PyMessage[] {
  const r = spawnSync('python3', ['-c', SCRIPT], { input: JSON.stringify({ kind, path, folder }), encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`python3 failed: ${r.stderr}`);
  return (JSON.parse(r.stdout) as (Omit<PyMessage, 'bytes'> & { bytes: string })[]).map((m) => ({ ...m, bytes: Buffer.from(m.bytes, 'base64') }));
}
