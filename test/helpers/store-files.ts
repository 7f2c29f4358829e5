// The embedded store's files under `<data_dir>/state/` with their bytes, to show that a process
// wrote nothing. store.lock (empty) is left out: opening the store makes it, to read under it.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export function storeFiles(dataDir: string): Record<string, string> {
  const state = join(dataDir, 'state');
  const names = readdirSync(state).filter((f) => f !== 'store.lock').sort();
  return Object.fromEntries(names.map((f) => [f, readFileSync(join(state, f), 'latin1')]));
}
