// Child process for mbox tests: appends `count` messages tagged `tag` to the mbox at `path`,
// printing "ok <n>" or "err <code> <enhanced>" per delivery.
import { DirSyncer } from '../../../src/queue/dir-sync.js';
import { MboxWriter, mboxEntry } from '../../../src/delivery/mbox.js';
import { DeliveryError } from '../../../src/delivery/errors.js';

const [path, countS, tag, sizeS] = process.argv.slice(2);
const w = new MboxWriter(new DirSyncer(), { lockTimeoutMs: 20_000 });
for (let i = 0; i < Number(countS); i++) {
  const body = `Subject: ${tag} ${i}\n\nFrom the start\n${'x'.repeat(Number(sizeS ?? 0))}\nend ${tag} ${i}\n`;
  try {
    await w.deliver(path!, undefined, mboxEntry('child@example.net', 1_700_000_000_000, Buffer.from(body)));
    process.stdout.write(`ok ${i}\n`);
  } catch (e) {
    const d = e as DeliveryError;
    process.stdout.write(`err ${d.code} ${d.enhanced} ${String(d.cause)}\n`);
  }
}
