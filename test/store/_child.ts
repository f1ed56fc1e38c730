/**
 * Child process for test/store/process.test.ts: opens the store in argv[2] and, per argv[3],
 * `hold`: prints "open" and waits (holds the LevelDB lock); `intent`: begins a boot with 10
 * checkpointed records, journals an intent, prints "intent" and waits to be SIGKILLed.
 */
import { openStore } from '../../src/store/index.js';
import { bootInfo, checkpoint } from './_fixtures.js';
import { fill } from './suite.js';

const [dir, mode] = process.argv.slice(2);
if (dir === undefined) throw new Error('usage: _child.js DIR hold|intent');
const store = await openStore(dir);
if (mode === 'intent') {
  const boot = await store.beginBoot(bootInfo(0));
  await fill(store, boot, 0, 10, 10);
  await store.storeCheckpoint(boot, checkpoint(10));
  await store.journalIntent(boot, { flavor: 'n', removed: 0, n: 10, at: 42 });
}
process.stdout.write(mode === 'intent' ? 'intent\n' : 'open\n');
setInterval(() => undefined, 60_000);
