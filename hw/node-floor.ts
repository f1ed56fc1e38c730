/**
 * Node's floor under the daemon's memory figures (issue 17): node started as the daemon is
 * (`DAEMON_NODE_FLAGS`, `DAEMON_MALLOC_ENV`), with the modules of `imakeep/daemon` loaded (what
 * `imakeep run` loads, less its ~400 lines of command line) and a store open, idle. The benches
 * measure it in the same run as the daemon (`measureNodeFloor` in hw/collector-process.ts): what the
 * daemon holds above it is what its work costs.
 *
 *   node [DAEMON_NODE_FLAGS] dist/hw/node-floor.js STORE_DIR
 *
 * Prints `ready` once the store is open; closes it and exits on SIGTERM. Nothing else is imported
 * here: every module would raise the floor.
 */
import '../src/daemon/index.js';
import { openStore } from '../src/store/index.js';

const storeDir = process.argv[2];
if (storeDir === undefined) throw new RangeError('usage: node dist/hw/node-floor.js STORE_DIR');
const store = await openStore(storeDir);
process.once('SIGTERM', () => {
  void store.close().then(() => process.exit(0));
});
process.stdout.write('ready\n');
// Idle until SIGTERM: an interval keeps the event loop alive as the daemon's schedule does.
setInterval(() => undefined, 60_000);
