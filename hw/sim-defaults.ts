/**
 * `npm run sim`: a swtpm and the securityfs emulator with defaults, synthetic records at 5/s,
 * until Ctrl-C. Prints where everything is.
 */
import { startSwtpm } from './swtpm.js';
import { runSimulation } from './securityfs/simulate.js';

const MOUNT = '/tmp/imakeep-sim';

const swtpm = await startSwtpm({ banks: ['sha1', 'sha256'] });
const abort = new AbortController();
process.once('SIGINT', () => abort.abort());
process.once('SIGTERM', () => abort.abort());
const say = (line: string) => process.stdout.write(`${line}\n`);
say(`swtpm             ${swtpm.address}  (one client at a time: use the shared TPM below)`);
try {
  await runSimulation({ mountDir: MOUNT, tpm: swtpm.address, rate: 5 }, abort.signal, say);
} finally {
  await swtpm.stop();
}
