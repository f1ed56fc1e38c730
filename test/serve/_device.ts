/**
 * A simulated device for the serve, verify and example tests: it plays the collector's cycle
 * (design.md "The cycle") with the real parts below it — a real swtpm extended with every record,
 * real quotes with chained nonces, a real LevelDB store — and keeps the untrimmed list of every
 * boot, which is what the served log must equal byte for byte (Invariant 2).
 *
 * The kernel is an array: `measure` appends to it and extends the TPM as IMA would; `remove`
 * drops the head once stored and checkpointed, as the collector's removal would. `tail()` is the
 * {@link KernelTail} the server reads the unstored part through.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { extendedDigest, PcrReplay, type ImaRecord } from '../../src/ima/index.js';
import { ChunkBuilder, nextCheckpointNonce, openStore, type BootInfo, type ImaStore, type QuoteLink } from '../../src/store/index.js';
import { Tpm, type AttestationKey } from '../../src/tpm/index.js';
import type { KernelTail, TailBatch } from '../../src/serve/index.js';
import { startSwtpm, type SwtpmInstance } from '../../hw/swtpm.js';
import { ImaWorkload, type WorkloadOptions } from '../../src/testing/index.js';

const BANK_MODES = { sha1: 'native', sha256: 'native' } as const;
const QUOTED = [
  { bank: 'sha1', pcr: 10 },
  { bank: 'sha256', pcr: 10 },
] as const;

/** Options of {@link SimulatedDevice.start}. */
export interface DeviceOptions {
  /** Workload of every boot (seed + boot number keeps boots distinct). */
  readonly workload?: Omit<WorkloadOptions, 'seed'> & { readonly seed?: number };
  /** Records per chunk; default 40 (small, so tests cross many chunk boundaries). */
  readonly chunkRecords?: number;
  /** Store directory to use (default a fresh temp dir, removed by `close`). */
  readonly storeDir?: string;
}

/** One boot as the kernel saw it. */
interface BootState {
  readonly boot: number;
  readonly workload: ImaWorkload;
  readonly replay: PcrReplay;
  /** Every record of the boot, in order: the untrimmed kernel list. */
  readonly all: ImaRecord[];
  /** Records removed from the kernel so far (T). */
  removed: number;
}

/** The simulated device. */
export class SimulatedDevice {
  readonly store: ImaStore;
  readonly storeDir: string;
  readonly swtpm: SwtpmInstance;
  readonly tpm: Tpm;
  #ak: AttestationKey;
  readonly #options: DeviceOptions;
  readonly #ownsDir: boolean;
  #boot: BootState | undefined;
  #lastQuote: QuoteLink | null = null;
  readonly #boots: BootState[] = [];

  private constructor(store: ImaStore, storeDir: string, ownsDir: boolean, swtpm: SwtpmInstance, tpm: Tpm, ak: AttestationKey, options: DeviceOptions) {
    this.store = store;
    this.storeDir = storeDir;
    this.#ownsDir = ownsDir;
    this.swtpm = swtpm;
    this.tpm = tpm;
    this.#ak = ak;
    this.#options = options;
  }

  /** Starts swtpm, opens a store, creates the AK and begins boot 0. */
  static async start(options: DeviceOptions = {}): Promise<SimulatedDevice> {
    const ownsDir = options.storeDir === undefined;
    const storeDir = options.storeDir ?? join(mkdtempSync(join(tmpdir(), 'imakeep-device-')), 'store');
    const swtpm = await startSwtpm();
    let tpm: Tpm | undefined;
    let store: ImaStore | undefined;
    try {
      tpm = Tpm.open(swtpm.address);
      const ak = await tpm.createAk();
      store = await openStore(storeDir);
      await store.updateMeta({ akPublic: ak.public, deviceId: 'gateway-0042' });
      const device = new SimulatedDevice(store, storeDir, ownsDir, swtpm, tpm, ak, options);
      await device.#beginBoot();
      return device;
    } catch (e) {
      await store?.close();
      await tpm?.close();
      await swtpm.stop();
      if (ownsDir) rmSync(join(storeDir, '..'), { recursive: true, force: true });
      throw e;
    }
  }

  /** The attestation key (the same key after a reboot: a deterministic primary). */
  get ak(): AttestationKey {
    return this.#ak;
  }

  /** The current boot's store number. */
  get boot(): number {
    return this.#state().boot;
  }

  /** Every record of `boot` measured so far (the list the kernel would show had nothing been removed). */
  records(boot = this.boot): readonly ImaRecord[] {
    const state = this.#boots.find((b) => b.boot === boot);
    if (state === undefined) throw new Error(`no boot ${boot}`);
    return state.all;
  }

  /** Records removed from the current boot's kernel list (T). */
  get removed(): number {
    return this.#state().removed;
  }

  #state(): BootState {
    if (this.#boot === undefined) throw new Error('no boot');
    return this.#boot;
  }

  async #beginBoot(): Promise<void> {
    const n = this.#boots.length;
    const info: BootInfo = {
      kernelBootId: `6b1f0e52-8d1c-4c3e-a0f5-${String(n).padStart(12, '0')}`,
      firstSeen: 1_763_800_000_000 + n * 86_400_000,
      resetCount: n + 1,
      bankModes: BANK_MODES,
      endianness: 'le',
      template: 'ima-sig',
      templateHash: 'sha256',
    };
    const boot = await this.store.beginBoot(info);
    const w = this.#options.workload;
    const state: BootState = {
      boot,
      workload: new ImaWorkload({ template: 'mixed', violationRate: 0.03, ...w, seed: (w?.seed ?? 7) + 1000 * n }),
      replay: new PcrReplay({ banks: BANK_MODES }),
      all: [],
      removed: 0,
    };
    this.#boots.push(state);
    this.#boot = state;
  }

  /** IMA measures `n` records: each is appended to the kernel list and extended into PCR 10. */
  async measure(n: number): Promise<void> {
    const state = this.#state();
    for (const record of state.workload.records(n)) {
      state.all.push(record);
      await this.tpm.pcrExtend(record.pcr, { sha1: extendedDigest(record, 'sha1'), sha256: extendedDigest(record, 'sha256') });
    }
  }

  /** Stores every measured record not stored yet, in chunks of `chunkRecords` (the last one may be short). */
  async collect(): Promise<void> {
    const state = this.#state();
    const per = this.#options.chunkRecords ?? 40;
    let stored = await this.store.storedCount(state.boot);
    while (stored < state.all.length) {
      const builder = new ChunkBuilder(stored);
      for (const record of state.all.slice(stored, stored + per)) {
        builder.add(record, 0);
        state.replay.extend(record);
      }
      const draft = builder.draft(state.replay.toState());
      await this.store.appendChunk(state.boot, draft);
      stored += draft.count;
    }
  }

  /**
   * Quotes PCR 10 with the nonce chained from the previous checkpoint and stores a checkpoint over
   * every stored record (call after `collect`, when the TPM holds exactly the stored records).
   */
  async checkpoint(): Promise<number> {
    const state = this.#state();
    const count = await this.store.storedCount(state.boot);
    const { nonce, anchor } = await nextCheckpointNonce(this.store, state.boot, this.#lastQuote ?? undefined);
    const quote = await this.tpm.quote({ nonce, pcrs: QUOTED, ak: this.ak });
    await this.store.storeCheckpoint(state.boot, {
      count,
      pcrs: quote.pcrs,
      attest: quote.attest,
      signature: quote.signature,
      akName: this.ak.name,
      nonce,
      pcrBlob: null,
      anchor,
    });
    this.#lastQuote = { attest: quote.attest, signature: quote.signature };
    return count;
  }

  /** Removes the kernel's head up to the last checkpoint, journaled as the collector does. */
  async remove(): Promise<number> {
    const state = this.#state();
    const covered = (await this.store.lastCheckpoint(state.boot))?.count ?? 0;
    const n = covered - state.removed;
    if (n <= 0) return 0;
    await this.store.journalIntent(state.boot, { flavor: 'n', removed: state.removed, n, at: 0 });
    state.removed += n;
    await this.store.journalOutcome(state.boot, { done: true });
    return n;
  }

  /** One full cycle: measure, store, quote, remove. */
  async cycle(n: number): Promise<void> {
    await this.measure(n);
    await this.collect();
    await this.checkpoint();
    await this.remove();
  }

  /**
   * Reboots: an orderly TPM2_Shutdown(CLEAR), a TPM reset through swtpm's control channel (PCRs
   * back to zero, resetCount + 1), TPM2_Startup, and a new boot segment in the store.
   */
  async reboot(): Promise<void> {
    await this.tpm.transport.send(Uint8Array.of(0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x45, 0, 0));
    const res = spawnSync('swtpm_ioctl', ['--tcp', `${this.swtpm.host}:${this.swtpm.ctrlPort}`, '-i'], { encoding: 'utf8' });
    if (res.status !== 0) throw new Error(`swtpm_ioctl -i: ${res.stderr}`);
    await this.tpm.startup();
    const ak = await this.tpm.createAk();
    this.#ak = ak;
    this.#lastQuote = null;
    await this.#beginBoot();
  }

  /**
   * The kernel tail of the current boot: records removed..end, read in batches of `batch`
   * records. `onRead` runs before each batch (tests use it to remove records mid-stream).
   * `signalEmpty: false` makes it end silently when everything from its position was removed
   * (a tail that does not yield the empty batch the KernelTail contract asks for).
   */
  tail(options: { readonly batch?: number; readonly onRead?: () => Promise<void>; readonly signalEmpty?: boolean } = {}): KernelTail {
    const state = this.#state();
    const batch = options.batch ?? 64;
    return {
      boot: state.boot,
      end: () => Promise.resolve(state.all.length),
      async *records(from: number): AsyncGenerator<TailBatch> {
        for (let at = from; ; ) {
          await options.onRead?.();
          const first = Math.max(at, state.removed);
          if (first >= state.all.length) {
            if (first > at && options.signalEmpty !== false) yield { firstIndex: first, records: [] }; // removed meanwhile, kernel now empty
            return;
          }
          const records = state.all.slice(first, first + batch);
          yield { firstIndex: first, records };
          at = first + records.length;
        }
      },
    };
  }

  /** Closes the store, the TPM connection and swtpm; removes the temp store. */
  async close(): Promise<void> {
    await this.store.close().catch(() => undefined);
    await this.tpm.flush(this.ak.handle).catch(() => undefined);
    await this.tpm.close().catch(() => undefined);
    await this.swtpm.stop();
    if (this.#ownsDir) rmSync(join(this.storeDir, '..'), { recursive: true, force: true });
  }
}
