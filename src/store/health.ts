// The store's health, for readiness checks (`GET /readyz`): healthy unless the driver says
// otherwise. A Redis store is unhealthy from the moment its connection drops until it is back
// and subscribed again; meanwhile it serves last known values (last-known.ts) and fails
// everything else with StoreUnavailableError. Embedded and memory stores have no remote end; an
// embedded store is unhealthy only once it has met files in a newer format (embedded.ts).
import { MemoryStore } from './memory.js';
import type { Store, StoreHealth } from './store.js';

const since = Date.now();

export function storeHealth(store: Store): StoreHealth {
  return store.health?.() ?? { driver: store instanceof MemoryStore ? 'memory' : 'embedded', healthy: true, since };
}
