/**
 * The device of the serve, verify, policy, fleet and example tests: the real collector
 * (src/collector) on the collector tests' rig (test/collector/_rig.ts): the FUSE securityfs
 * emulator logging and extending into a real swtpm, a real LevelDB store, the real quoter. The
 * emulator's oracle of every boot is the untrimmed list the served log must equal byte for byte
 * (Invariant 2, docs/design.md).
 */
import type { KeyObject } from 'node:crypto';
import { parseBinaryList, type ImaRecord } from '../../src/ima/index.js';
import { DEFAULT_CHUNK_BOUNDS, type ImaStore } from '../../src/store/index.js';
import { buildBundle, type KernelTail } from '../../src/serve/index.js';
import { publicKeyFromTpm2b, TpmQuoter, type QuoteSource, type SignedQuote, type Tpm } from '../../src/tpm/index.js';
import type { Collector } from '../../src/collector/index.js';
import { collectorTail, type WorkloadOptions } from '../../src/testing/index.js';
import type { SwtpmInstance } from '../../hw/swtpm.js';
import { startRig, type Rig } from '../collector/_rig.js';

/** Options of {@link CollectedDevice.start}. */
export interface DeviceOptions {
  /**
   * About how many records a chunk holds (small, so tests cross many chunk boundaries); default
   * the collector's chunk bounds.
   */
  readonly chunkRecords?: number;
  /** Store directory to use (default inside the rig's temp dir, removed by `close`). */
  readonly storeDir?: string;
  /**
   * Records per kernel read (the collector's `readWindowRecords`), and so per batch of its tail
   * (small, so a log stream reads the kernel in several batches); default the collector's.
   */
  readonly readWindowRecords?: number;
  /** The workload's seed (default the rig's): devices of one test measure different files. */
  readonly seed?: number;
  /** Template of the measured records (default `mixed`). */
  readonly template?: WorkloadOptions['template'];
}

/**
 * Bytes of a typical `mixed` workload record in a chunk (measured mean ~238): the collector bounds
 * chunks in bytes (src/store ChunkBounds), so `chunkRecords` is turned into bytes with it.
 */
const RECORD_BYTES = 240;

/** Why `collect` refuses the quote: the cycle stores what it read, then stops before the checkpoint. */
class StoreOnly extends Error {}

/** A quote the collector made: its nonce (src/store `nextCheckpointNonce`) and the signed quote. */
export interface CollectorQuote {
  readonly nonce: Uint8Array;
  readonly quote: SignedQuote;
}

/** A device driven by the real collector. */
export class CollectedDevice {
  readonly #rig: Rig;
  readonly #options: DeviceOptions;
  readonly #earlierBoots = new Map<number, readonly ImaRecord[]>();
  /** The quoter the collector quotes with; `quotes` refuses while `collect` runs a cycle. */
  readonly quoter: TpmQuoter;
  readonly #quotes: QuoteSource;
  #collector: Collector | undefined;
  #quoting = true;
  /** Told the collector's next quote (see {@link nextQuote}). */
  #onQuote: ((quoted: CollectorQuote) => void) | undefined;
  #boots = 0;

  private constructor(rig: Rig, options: DeviceOptions) {
    this.#rig = rig;
    this.#options = options;
    const quoter = new TpmQuoter(rig.tpm);
    this.quoter = quoter;
    const refused = (): never => {
      throw new StoreOnly('the test stores without quoting');
    };
    this.#quotes = {
      activeBanks: () => quoter.activeBanks(),
      readPcrs: (pcrs) => quoter.readPcrs(pcrs),
      quote: async (nonce, pcrs) => {
        if (!this.#quoting) refused();
        const quote = await quoter.quote(nonce, pcrs);
        this.#onQuote?.({ nonce, quote });
        this.#onQuote = undefined;
        return quote;
      },
      quoteAndRead: (nonce, pcrs) => (this.#quoting ? quoter.quoteAndRead(nonce, pcrs) : refused()),
    };
  }

  /** Starts the rig and opens the collector on it. */
  static async start(options: DeviceOptions = {}): Promise<CollectedDevice> {
    const rig = await startRig({ storeDir: options.storeDir, seed: options.seed, template: options.template });
    try {
      const device = new CollectedDevice(rig, options);
      device.#collector = await device.#open();
      return device;
    } catch (e) {
      await rig.stop();
      throw e;
    }
  }

  #open(): Promise<Collector> {
    const { chunkRecords, readWindowRecords } = this.#options;
    return this.#rig.collector(
      {
        flavor: 'n',
        ...(chunkRecords === undefined ? {} : { chunkBounds: { ...DEFAULT_CHUNK_BOUNDS, maxBytes: chunkRecords * RECORD_BYTES } }),
        ...(readWindowRecords === undefined ? {} : { readWindowRecords }),
      },
      this.#quotes,
    );
  }

  get #running(): Collector {
    if (this.#collector === undefined) throw new Error('the device is not started');
    return this.#collector;
  }

  get store(): ImaStore {
    return this.#rig.store;
  }

  /** The swtpm behind {@link tpm} (one connection at a time: close `tpm` before another client talks to it). */
  get swtpm(): SwtpmInstance {
    return this.#rig.swtpm;
  }

  /** The TPM the emulator extends and the collector quotes with. */
  get tpm(): Tpm {
    return this.#rig.tpm;
  }

  /** The AK's public area and Name: the quoter's deterministic primary (the same key after a reboot). */
  ak(): Promise<{ readonly public: Uint8Array; readonly name: Uint8Array }> {
    return this.tpm.withAk({}, (ak) => Promise.resolve({ public: ak.public, name: ak.name }));
  }

  /** The current boot's store number. */
  get boot(): number {
    return this.#running.boot;
  }

  /** Records removed from the current boot's kernel list (T). */
  get removed(): number {
    return this.#running.removed;
  }

  /** Every record of `boot` measured so far: the list the kernel would show had nothing been removed. */
  records(boot = this.boot): readonly ImaRecord[] {
    if (boot === this.boot) return parseBinaryList(this.#rig.oracle());
    const earlier = this.#earlierBoots.get(boot);
    if (earlier === undefined) throw new Error(`no boot ${boot}`);
    return earlier;
  }

  /** IMA measures `n` records: logged by the emulated kernel, extended into PCR 10. */
  async measure(n: number): Promise<void> {
    await this.#rig.append(n);
  }

  /** The nonce and quote of the collector's next checkpoint quote, once it is made. */
  nextQuote(): Promise<CollectorQuote> {
    return new Promise((resolve) => {
      this.#onQuote = resolve;
    });
  }

  /** One collector cycle: drain, chunk, quote, match, checkpoint, remove. */
  async runOnce(): Promise<void> {
    await this.#running.runOnce();
  }

  /** Measures `n` records, then one collector cycle. */
  async cycle(n: number): Promise<void> {
    await this.measure(n);
    await this.runOnce();
  }

  /**
   * Stores what the kernel holds without a checkpoint or a removal: a cycle whose quote is refused
   * (the collector seals what it drained before it quotes: src/collector `#attest`).
   */
  async collect(): Promise<void> {
    this.#quoting = false;
    try {
      await this.#running.runOnce();
      throw new Error('the cycle quoted');
    } catch (e) {
      if (!(e instanceof StoreOnly)) throw e;
    } finally {
      this.#quoting = true;
    }
    const stored = await this.store.storedCount(this.boot);
    if (stored !== this.records().length) throw new Error(`collect stored ${stored} of ${this.records().length} records`);
  }

  /** Reboots the machine (a new kernel boot id, a TPM reset) and opens a collector on the new boot. */
  async reboot(): Promise<void> {
    this.#earlierBoots.set(this.boot, this.records());
    await this.#running.close();
    this.#boots++;
    await this.#rig.reboot(`6f1d9a52-0c3b-4e8e-9d7a-${String(this.#boots).padStart(12, '0')}`);
    this.#collector = await this.#open();
  }

  /**
   * The collector as the API server's kernel tail (src/daemon `collectorTail`). `onRead` runs
   * before each batch (tests remove records mid-stream with it); `signalEmpty: false` drops the
   * empty batch that tells the server the kernel was emptied under it (a tail that does not keep
   * that part of the KernelTail contract).
   */
  tail(options: { readonly onRead?: () => Promise<void>; readonly signalEmpty?: boolean } = {}): KernelTail {
    const tail = collectorTail(this.#running);
    if (options.onRead === undefined && options.signalEmpty === undefined) return tail;
    return {
      boot: tail.boot,
      end: () => tail.end(),
      async *records(from: number) {
        const batches = tail.records(from)[Symbol.asyncIterator]();
        try {
          for (;;) {
            await options.onRead?.();
            const next = await batches.next();
            if (next.done === true || (next.value.records.length === 0 && options.signalEmpty === false)) return;
            yield next.value;
          }
        } finally {
          await batches.return?.(undefined);
        }
      },
    };
  }

  /** Closes the collector and stops the rig (emulator, swtpm, store, temp dir). */
  async close(): Promise<void> {
    await this.#collector?.close().catch(() => undefined);
    await this.#rig.stop();
  }
}

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
  stop(): Promise<void>;
}

/**
 * Runs the collector over `boots` boots and exports everything in one bundle. Each boot ends with
 * a cycle after the last measurement (the TPM has every extend by then: the last checkpoint
 * covers all) and a reboot.
 */
export async function collectEvidence(options: CollectOptions): Promise<Collected> {
  const device = await CollectedDevice.start({ seed: 13 });
  try {
    for (let boot = 0; boot < options.boots; boot++) {
      if (boot > 0) await device.reboot();
      for (let cycle = 0; cycle < options.cycles; cycle++) await device.cycle(options.records);
      await device.runOnce();
    }
    const akPublic = device.store.meta.akPublic;
    if (akPublic === null) throw new Error('the collector stored no AK');
    const built = await buildBundle(device.store, undefined, { maxBytes: 64 * 1024 * 1024 });
    return { bundle: built.bytes, ak: publicKeyFromTpm2b(akPublic), stop: () => device.close() };
  } catch (e) {
    await device.close();
    throw e;
  }
}
