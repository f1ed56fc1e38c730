/**
 * Configuration of a collector: what to read, how to remove, when to run. Every memory-relevant
 * knob is here (Invariant 4: memory is set by configuration, never by the log's length).
 */
import type { BankMode, BankName } from '../ima/index.js';
import type { BusyRetryPolicy, KernelCapabilities, SecurityfsFiles } from '../kernel/index.js';
import { DEFAULT_CHUNK_BOUNDS, type ChunkBounds, type ImaStore } from '../store/index.js';
import type { QuoteSource } from '../tpm/index.js';

/** Removal flavour asked for: `auto` picks from what the kernel offers (design.md "Removal flavours"). */
export type FlavorChoice = 'auto' | 'n' | 'staged' | 'none';

/** The flavour in use. */
export type Flavor = 'n' | 'staged' | 'none';

/**
 * Named steps of a cycle, in order, where {@link CollectorHooks.step} is called: the places a
 * crash must be survivable (Invariant 3). `intent-journaled` is between the journal intent and the
 * kernel write, `kernel-written` between the kernel write (`N` or `A`) and the next journal write.
 */
export const COLLECTOR_STEPS = [
  'chunk-committed',
  'checkpoint-stored',
  'intent-journaled',
  'kernel-written',
  'staged-journaled',
  'staged-covered',
  'staged-deleted',
  'outcome-journaled',
] as const;

/** One of {@link COLLECTOR_STEPS}. */
export type CollectorStep = (typeof COLLECTOR_STEPS)[number];

/** Test seam: called after each named step; a hook that throws aborts the cycle there, like a crash. */
export interface CollectorHooks {
  step?(step: CollectorStep): void | Promise<void>;
}

/** Options of `Collector.open`. */
export interface CollectorOptions {
  /** The store (the collector does not close it). */
  readonly store: ImaStore;
  /** The TPM (the collector does not close it). */
  readonly quotes: QuoteSource;
  /** securityfs mount point (default `/sys/kernel/security`). */
  readonly securityfsRoot?: string;
  /** Kernel command line, for `ima_flush_htable` (default `/proc/cmdline`). */
  readonly cmdlinePath?: string;
  /** The kernel's boot id (default `/proc/sys/kernel/random/boot_id`). */
  readonly bootIdPath?: string;
  /**
   * The device's identity, bound by every checkpoint's nonce and named by its enrollment: adopted
   * by a store that has no checkpoint yet, refused by one of another device (`adoptDeviceId`,
   * `STORE_DEVICE_ID`). Default: the store keeps what it has (none for a new store).
   */
  readonly deviceId?: string;
  readonly files?: SecurityfsFiles;
  /** Default `auto`. */
  readonly flavor?: FlavorChoice;
  /** Banks to quote and replay (default: the TPM's active banks). Fixed per boot once it began. */
  readonly banks?: readonly BankName[];
  /** How the kernel extends each bank (default `native` for all). */
  readonly bankModes?: Readonly<Partial<Record<BankName, BankMode>>>;
  /** The IMA PCR (default 10, `CONFIG_IMA_MEASURE_PCR_IDX`). */
  readonly pcr?: number;
  /** When the open chunk is sealed (default {@link DEFAULT_CHUNK_BOUNDS}). */
  readonly chunkBounds?: ChunkBounds;
  /** Bytes per read(2) of a kernel list (default 256 KiB: the kernel walks its list per read). */
  readonly readSize?: number;
  /** Records held from one drain read before they go to the open chunk (default 4096). */
  readonly readWindowRecords?: number;
  /** Cycle period of `run` in ms (default 60 000). */
  readonly intervalMs?: number;
  /** How often `run` looks at the kernel's record count between cycles, ms (default 1000). */
  readonly pollMs?: number;
  /** Run a cycle early once the kernel holds this many records (default 4096). */
  readonly cycleAtRecords?: number;
  /** ... or once the modeled kernel memory of the list passes this many bytes (default 2 MiB). */
  readonly cycleAtKmemBytes?: number;
  /** Staged flavour: quotes tried, and the pause between them, until a quote covers the staged list. */
  readonly stagedQuoteAttempts?: number;
  readonly stagedQuoteDelayMs?: number;
  /**
   * Quotes a cycle may add, anchored at the stored count, while its newest checkpoint leaves stored
   * records out of every export (records arriving throughout; `Cycle.attestStored`). 0 turns them off.
   */
  readonly exportQuoteAttempts?: number;
  /** EBUSY backoff of kernel opens. */
  readonly busyRetry?: BusyRetryPolicy;
  readonly hooks?: CollectorHooks;
  /** Clock (ms since the epoch). */
  readonly now?: () => number;
}

/** Defaults of the optional numeric knobs. */
export const COLLECTOR_DEFAULTS = {
  pcr: 10,
  chunkBounds: DEFAULT_CHUNK_BOUNDS,
  readSize: 256 * 1024,
  readWindowRecords: 4096,
  intervalMs: 60_000,
  pollMs: 1000,
  cycleAtRecords: 4096,
  cycleAtKmemBytes: 2 * 1024 * 1024,
  stagedQuoteAttempts: 20,
  stagedQuoteDelayMs: 50,
  exportQuoteAttempts: 3,
} as const;

/**
 * The flavour to use and why. `auto` prefers `staged` when `ima_flush_htable` is on (only `D`
 * then frees whole records, and `N` is refused, docs/kernel.md#staging-requests, #what-removal-frees), else `n` (one short
 * lock window, no kernel-side state left after a crash), else `staged`; `none` when the kernel
 * offers neither (before 7.2, or writes refused).
 */
export function chooseFlavor(choice: FlavorChoice, caps: KernelCapabilities): { flavor: Flavor; reason: string } {
  const offers = (f: 'n' | 'staged'): boolean => caps.flavours.includes(f);
  const refused = `the kernel offers [${caps.flavours.join(', ')}] (write open: ${caps.writeOpen}, ima_flush_htable: ${caps.flushHtable})`;
  switch (choice) {
    case 'none':
      return { flavor: 'none', reason: 'configured' };
    case 'n':
    case 'staged':
      return offers(choice) ? { flavor: choice, reason: 'configured' } : { flavor: 'none', reason: `${choice} asked, ${refused}` };
    case 'auto':
      if (caps.flushHtable && offers('staged')) return { flavor: 'staged', reason: 'auto: ima_flush_htable is on' };
      if (offers('n')) return { flavor: 'n', reason: 'auto' };
      if (offers('staged')) return { flavor: 'staged', reason: 'auto' };
      return { flavor: 'none', reason: `auto: ${refused}` };
  }
}
