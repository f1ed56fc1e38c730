/**
 * Evidence made by the real collector (test/collector/_rig.ts: FUSE securityfs emulator extending
 * a real swtpm, a real LevelDB store), over several boots: a boot ends with the collector closed,
 * an orderly TPM2_Shutdown(CLEAR), a TPM reset through swtpm's control channel (PCRs back to zero,
 * resetCount + 1), TPM2_Startup, a fresh emulator (an empty measurement list) and a new boot id.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import { startSecurityfsEmulator, type SecurityfsEmulator } from '../../hw/securityfs/emulator.js';
import { buildBundle } from '../../src/serve/index.js';
import { publicKeyFromTpm2b } from '../../src/tpm/index.js';
import { RIG_BANKS, startRig, type Rig } from '../collector/_rig.js';

/** Options of {@link collectEvidence}. */
export interface CollectOptions {
  readonly boots: number;
  /** Collector cycles per boot, each after `records` new measurements. */
  readonly cycles: number;
  readonly records: number;
}

/** What {@link collectEvidence} made. */
export interface Collected {
  /** The whole store as one bundle, from `0.0.0`. */
  readonly bundle: Uint8Array;
  /** The AK the collector quoted with (the verifier pins it). */
  readonly ak: KeyObject;
  readonly rig: Rig;
  stop(): Promise<void>;
}

/** TPM2_Shutdown(CLEAR) (TPM 2.0 Part 3 §9.4): an orderly shutdown, so the clock stays `safe`. */
const SHUTDOWN_CLEAR = Uint8Array.of(0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x45, 0, 0);

/** Runs the collector over `boots` boots and exports everything in one bundle. */
export async function collectEvidence(options: CollectOptions): Promise<Collected> {
  const rig = await startRig({ seed: 13 });
  const emulators: SecurityfsEmulator[] = [];
  const stop = async (): Promise<void> => {
    for (const emu of emulators) await emu.stop();
    await rig.stop();
  };
  try {
    let emu = rig.emu;
    for (let boot = 0; boot < options.boots; boot++) {
      if (boot > 0) {
        await rig.tpm.transport.send(SHUTDOWN_CLEAR);
        const reset = spawnSync('swtpm_ioctl', ['--tcp', `${rig.swtpm.host}:${rig.swtpm.ctrlPort}`, '-i'], { encoding: 'utf8' });
        if (reset.status !== 0) throw new Error(`swtpm_ioctl -i: ${reset.stderr}`);
        await rig.tpm.startup();
        emu = await startSecurityfsEmulator({ banks: ['sha1', 'sha256'], tpm: rig.tpm, tpmBanks: RIG_BANKS, seqBufBytes: 0 });
        emulators.push(emu);
        writeFileSync(rig.bootIdPath, `6f1d9a52-0c3b-4e8e-9d7a-2b1c0000000${boot + 1}\n`);
      }
      const collector = await rig.collector({ securityfsRoot: emu.securityfsRoot }); // a new quoter: the TPM reset flushed the AK
      try {
        for (let cycle = 0; cycle < options.cycles; cycle++) {
          await emu.append([...rig.workload.records(options.records)]);
          await collector.runOnce();
        }
        await collector.runOnce(); // the TPM has every extend by now: the last checkpoint covers all
      } finally {
        await collector.close();
      }
    }
    const akPublic = rig.store.meta.akPublic;
    if (akPublic === null) throw new Error('the collector stored no AK');
    const built = await buildBundle(rig.store, undefined, { maxBytes: 64 * 1024 * 1024 });
    return { bundle: built.bytes, ak: publicKeyFromTpm2b(akPublic), rig, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
