// Child process for the crash test: accepts messages as fast as it can on `lanes` parallel
// lanes and prints "ACK <seq>" once each accept resolved (the moment a listener would say 250).
// The parent kills it with SIGKILL at some point.
import { createMessageQueue } from '../../../src/queue/manager.js';
import { silentLogger } from '../../../src/log/logger.js';
import { FakeDirectory } from './fake-directory.js';
import { envelope, testConfig } from './helpers.js';

const [dataDir, format, lanesS, firstS] = process.argv.slice(2);
const users = Array.from({ length: 4 }, (_, i) => `u${i}@example.test`);
const config = testConfig(dataDir!, { mailbox: { format, path: format === 'mbox' ? '{data_dir}/mbox/{local}' : '{data_dir}/mail/{local}' } });
const q = createMessageQueue({ config, log: silentLogger(), directory: new FakeDirectory(['example.test'], users) });
await q.start();
let seq = Number(firstS ?? 0);
const lane = async () => {
  while (true) {
    const n = seq++;
    const rcpts = [users[n % 4]!, ...(n % 3 === 0 ? [users[(n + 1) % 4]!] : [])];
    const body = `From: a@example.net\r\nSubject: crash ${n}\r\nX-Seq: ${n}\r\n\r\nFrom the start\r\n${'z'.repeat(2000)}\r\nend ${n}\r\n`;
    await q.accept(q.newId(), envelope('a@example.net', rcpts), Buffer.from(body));
    process.stdout.write(`ACK ${n}\n`);
  }
};
await Promise.all(Array.from({ length: Number(lanesS ?? 8) }, lane));
