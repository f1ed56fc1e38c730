/**
 * `node dist/hw/securityfs/measure.js [records]`: the emulator's figures on this machine: append
 * (log + one PCR_Extend per record into a swtpm with sha1+sha256), a full drain with
 * MeasurementListReader, a removal of 90 % of the list reading it inside the window, modeled kmem.
 */
import { ImaWorkload } from '../../src/testing/index.js';
import { MeasurementListReader, probeSecurityfs, removeFirstRecords } from '../../src/kernel/index.js';
import { startSwtpm } from '../swtpm.js';
import { startSecurityfsEmulator } from './emulator.js';

const count = Number(process.argv[2] ?? 100_000);
const swtpm = await startSwtpm({ banks: ['sha1', 'sha256'] });
const emu = await startSecurityfsEmulator({ tpm: swtpm.address });
const ms = (t0: number) => `${(performance.now() - t0).toFixed(0)} ms`;
try {
  const records = [...new ImaWorkload({ seed: 1, template: 'mixed', violationRate: 0.005 }).records(count)];
  let t0 = performance.now();
  const appended = await emu.append(records);
  console.log(`append ${count}: ${ms(t0)} (log ${appended.logMs.toFixed(0)} ms, extend ${appended.extendMs.toFixed(0)} ms)`);
  console.log(`kmem ${emu.kmemBytes()} B, ${((emu.kmemBytes() - 8192) / count).toFixed(1)} B/record`);
  const caps = probeSecurityfs({ root: emu.securityfsRoot, cmdlinePath: '/nonexistent' });
  const reader = new MeasurementListReader({ path: caps.binaryListPath });
  t0 = performance.now();
  let read = 0;
  for await (const batch of reader.drain()) read += batch.records.length;
  console.log(`drain ${read} records, ${reader.position.offset} B: ${ms(t0)}`);
  const n = Math.floor(count * 0.9);
  const removal = await removeFirstRecords({ path: caps.binaryListPath, decide: () => n });
  console.log(`remove ${removal.removed} (read inside the window): hold ${removal.holdMs.toFixed(0)} ms; kmem after ${emu.kmemBytes()} B`);
} finally {
  await emu.stop();
  await swtpm.stop();
}
