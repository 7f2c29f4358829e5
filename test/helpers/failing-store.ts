// A memory store whose hash reads of some keys fail as Redis's do in an outage for keys it holds
// no last known value of (StoreUnavailableError). `down` may change while a test runs.
import { StoreUnavailableError } from '../../src/store/errors.js';
import { MemoryStore } from '../../src/store/memory.js';

export function failingStore(down: Set<string>): MemoryStore {
  const store = new MemoryStore();
  const { hgetall, hget } = store;
  const refuse = (key: string) => Promise.reject(new StoreUnavailableError(`${key} unreadable`));
  store.hgetall = (key) => (down.has(key) ? refuse(key) : hgetall.call(store, key));
  store.hget = (key, field) => (down.has(key) ? refuse(key) : hget.call(store, key, field));
  return store;
}
