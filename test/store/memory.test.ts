/** The store suite on memory-level: the same behaviour without a disk. */
import { MemoryLevel } from 'memory-level';
import { storeSuite } from './suite.js';

storeSuite({
  name: 'memory-level',
  async create() {
    const db = new MemoryLevel<Uint8Array, Uint8Array>({ keyEncoding: 'view', valueEncoding: 'view' });
    // memory-level keeps its data across close/open, so "reopening" is the same instance.
    return { db, reopen: () => db, cleanup: async () => undefined };
  },
});
