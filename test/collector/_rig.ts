/**
 * The collector's test rig: a real swtpm, the FUSE securityfs emulator extending into it, a real
 * LevelDB store in a temp dir, a boot id file and a kernel command line file. Every test builds
 * one and stops it in `finally`/`after`, which stops every process and removes every dir.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSecurityfsEmulator, type SecurityfsEmulator } from '../../hw/securityfs/emulator.js';
import { startSwtpm, type SwtpmInstance } from '../../hw/swtpm.js';
import { startTpmProxy } from '../../hw/tpm-proxy.js';
import { PcrReplay, parseBinaryList, type BankName, type ImaRecord } from '../../src/ima/index.js';
import { openStore, type ImaStore } from '../../src/store/index.js';
import { Tpm, TpmQuoter, type QuoteSource } from '../../src/tpm/index.js';
import { Collector, type CollectorOptions } from '../../src/collector/index.js';
import { ImaWorkload, collectorTail, type WorkloadOptions } from '../../src/testing/index.js';
import { openLog, type LogQuery } from '../../src/serve/index.js';

/** Banks the rig's TPM extends and the collector quotes. */
export const RIG_BANKS: readonly BankName[] = ['sha1', 'sha256'];

/** Options of {@link startRig}. */
export interface RigOptions {
  readonly flushHtable?: boolean;
  readonly staging?: boolean;
  readonly seed?: number;
  /** Template of the workload's records (default `mixed`). */
  readonly template?: WorkloadOptions['template'];
  /** Store directory (default: inside the rig's temp dir, removed by stop()). */
  readonly storeDir?: string;
  /** Kernel boot id the rig's boot_id file shows. */
  readonly bootId?: string;
  /**
   * Put the TPM proxy in front of swtpm (hw/tpm-proxy.ts), so that a collector in another
   * process can quote while the emulator extends (swtpm serves one connection at a time).
   */
  readonly mux?: boolean;
  /** Manufacture swtpm with EK certificates from swtpm's local CA (enrollment; hw/swtpm.ts). */
  readonly ekCertificates?: boolean;
}

/** A running rig. */
export interface Rig {
  /** The emulated kernel; a new one after {@link Rig.reboot}. */
  readonly emu: SecurityfsEmulator;
  readonly swtpm: SwtpmInstance;
  /** TPM address for another process: the proxy's with `mux`, else swtpm's. */
  readonly tpmAddress: string;
  /** The TPM connection the emulator extends through (the collector shares it). */
  readonly tpm: Tpm;
  readonly work: string;
  readonly storeDir: string;
  readonly bootIdPath: string;
  readonly cmdlinePath: string;
  readonly workload: ImaWorkload;
  store: ImaStore;
  /** Appends `n` workload records (logged, then extended one by one). */
  append(n: number): Promise<ImaRecord[]>;
  /** Opens a collector on the rig (store, TPM, securityfs, files) with `overrides`. */
  collector(overrides?: Partial<CollectorOptions>, quotes?: QuoteSource): Promise<Collector>;
  /**
   * Reboots the emulated machine: the kernel (a fresh emulator, new boot id) and the TPM (an orderly
   * TPM2_Shutdown, a reset through swtpm's control channel: PCRs back to zero, resetCount + 1, then
   * TPM2_Startup). The swtpm, and so the AK, stay. Close collectors first.
   */
  reboot(bootId: string): Promise<void>;
  /** Closes and reopens the store (what a restarted process sees). */
  reopenStore(): Promise<ImaStore>;
  /** The emulator's oracle: every record ever appended, SHA-1 binary list. */
  oracle(): Buffer;
  oracleAscii(): Buffer;
  stop(): Promise<void>;
}

/** Starts swtpm, the emulator (extending sha1 and sha256 into it) and a store. */
export async function startRig(opts: RigOptions = {}): Promise<Rig> {
  const work = mkdtempSync(join(tmpdir(), 'imakeep-collector-'));
  const cleanups: (() => Promise<void> | void)[] = [() => rmSync(work, { recursive: true, force: true })];
  const stop = async (): Promise<void> => {
    for (const c of cleanups.reverse()) await c();
  };
  try {
    const swtpm = await startSwtpm(opts.ekCertificates === true ? { ekCertificates: true } : {});
    cleanups.push(() => swtpm.stop());
    const mux = opts.mux === true ? await startTpmProxy(swtpm.host, swtpm.port) : undefined;
    if (mux !== undefined) cleanups.push(() => mux.close());
    const tpmAddress = mux?.address ?? swtpm.address;
    const tpm = Tpm.open(tpmAddress);
    cleanups.push(() => tpm.close());
    const startKernel = (): Promise<SecurityfsEmulator> =>
      startSecurityfsEmulator({
        banks: ['sha1', 'sha256'],
        tpm,
        tpmBanks: RIG_BANKS,
        flushHtable: opts.flushHtable,
        staging: opts.staging,
        seqBufBytes: 0,
      });
    let kernel = await startKernel();
    cleanups.push(() => kernel.stop());
    const storeDir = opts.storeDir ?? join(work, 'store');
    const bootIdPath = join(work, 'boot_id');
    const cmdlinePath = join(work, 'cmdline');
    writeFileSync(bootIdPath, `${opts.bootId ?? '6f1d9a52-0c3b-4e8e-9d7a-2b1c00000001'}\n`);
    writeFileSync(cmdlinePath, `BOOT_IMAGE=/vmlinuz ro${opts.flushHtable === true ? ' ima_flush_htable' : ''}\n`);
    const workload = new ImaWorkload({ seed: opts.seed ?? 7, template: opts.template ?? 'mixed', violationRate: 0.01 });
    const rig: Rig = {
      get emu() {
        return kernel;
      },
      swtpm,
      tpmAddress,
      tpm,
      work,
      storeDir,
      bootIdPath,
      cmdlinePath,
      workload,
      store: await openStore(storeDir),
      async append(n) {
        const records = [...workload.records(n)];
        await kernel.append(records);
        return records;
      },
      collector(overrides = {}, quotes) {
        return Collector.open({
          store: rig.store,
          quotes: quotes ?? new TpmQuoter(tpm),
          securityfsRoot: kernel.securityfsRoot,
          cmdlinePath,
          bootIdPath,
          banks: RIG_BANKS,
          busyRetry: { attempts: 3, baseDelayMs: 1 },
          stagedQuoteDelayMs: 5,
          ...overrides,
        });
      },
      async reboot(bootId) {
        await kernel.stop();
        await tpm.transport.send(Uint8Array.of(0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x45, 0, 0)); // TPM2_Shutdown(CLEAR), Part 3 §9.4
        const reset = spawnSync('swtpm_ioctl', ['--tcp', `${swtpm.host}:${swtpm.ctrlPort}`, '-i'], { encoding: 'utf8' });
        if (reset.status !== 0) throw new Error(`swtpm_ioctl -i: ${reset.stderr}`);
        await tpm.startup();
        writeFileSync(bootIdPath, `${bootId}\n`);
        kernel = await startKernel();
      },
      async reopenStore() {
        await rig.store.close();
        rig.store = await openStore(storeDir);
        return rig.store;
      },
      oracle: () => readFileSync(kernel.control.oracleBinary),
      oracleAscii: () => readFileSync(kernel.control.oracleAscii),
      stop,
    };
    cleanups.push(() => rig.store.close());
    return rig;
  } catch (e) {
    await stop();
    throw e;
  }
}

/** The whole log of the collector's current boot as src/serve streams it (store + collector tail), one buffer. */
export async function collectLog(collector: Collector, query: LogQuery): Promise<Buffer> {
  const log = await openLog({ store: collector.store, tail: collectorTail(collector) }, query);
  const parts: Uint8Array[] = [];
  for await (const part of log.bytes()) parts.push(part);
  return Buffer.concat(parts);
}

/**
 * The real quoter on `tpm` with some of its calls replaced by what `seams` returns (given the
 * quoter): seams for timing and for fields of a result; the TPM's quotes and signatures stay real.
 */
export function quotesWith(tpm: Tpm, seams: (quoter: TpmQuoter) => Partial<QuoteSource>): QuoteSource {
  const quoter = new TpmQuoter(tpm);
  return {
    activeBanks: () => quoter.activeBanks(),
    readPcrs: (pcrs) => quoter.readPcrs(pcrs),
    quote: (nonce, pcrs) => quoter.quote(nonce, pcrs),
    quoteAndRead: (nonce, pcrs) => quoter.quoteAndRead(nonce, pcrs),
    ...seams(quoter),
  };
}

/** PCR 10 of the rig's banks in the TPM now. */
export async function tpmPcr10(tpm: Tpm): Promise<Record<string, string>> {
  const values = await tpm.pcrRead(RIG_BANKS.map((bank) => ({ bank, pcr: 10 })));
  return Object.fromEntries(values.map((v) => [v.bank, Buffer.from(v.value).toString('hex')]));
}

/** PCR 10 of the rig's banks after replaying a SHA-1 binary list. */
export function replayPcr10(list: Uint8Array): Record<string, string> {
  const replay = new PcrReplay({ banks: { sha1: 'native', sha256: 'native' } });
  for (const rec of parseBinaryList(list)) replay.extend(rec);
  return Object.fromEntries(RIG_BANKS.map((bank) => [bank, Buffer.from(replay.value(bank, 10)).toString('hex')]));
}
