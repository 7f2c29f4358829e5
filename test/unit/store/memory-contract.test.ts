// The in-memory store (src/store/memory.ts) against the shared Store contract.
import { createMemoryStore } from '../../../src/store/memory.js';
import { runStoreContract } from './contract.js';

runStoreContract('memory', () => createMemoryStore());
