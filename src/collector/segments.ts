/**
 * Boot segments (design.md "Store schema": one `boot/<n>` per kernel boot and per TPM reset): the
 * store's current boot is continued when it is the running kernel's, else a new segment begins
 * with the banks and bank modes it keeps for its life, and the TPM's resetCount learnt from one
 * quote.
 */
import { readFileSync } from 'node:fs';
import { BANKS, type BankMode, type BankName } from '../ima/index.js';
import { chainedNonceV1, type BootRecord, type ImaStore } from '../store/index.js';
import type { PcrRef, QuoteSource } from '../tpm/index.js';

/** Default path of the kernel's boot id. */
export const DEFAULT_BOOT_ID_PATH = '/proc/sys/kernel/random/boot_id';

/** PCR `pcr` of each of `banks`: what the collector quotes and reads. */
export const inBanks = (banks: readonly BankName[], pcr: number): PcrRef[] => banks.map((bank) => ({ bank, pcr }));

/** The open boot segment: its number in the store, its metadata, and the banks it replays. */
export interface BootSegment {
  readonly boot: number;
  readonly record: BootRecord;
  /** The banks of `record.bankModes`, in BANKS order. */
  readonly banks: readonly BankName[];
  readonly modes: Readonly<Partial<Record<BankName, BankMode>>>;
}

/** What opening a segment needs: the store, the TPM and the bank choice of `CollectorOptions`. */
export interface SegmentSources {
  readonly store: ImaStore;
  readonly quotes: QuoteSource;
  /** The IMA PCR. */
  readonly pcr: number;
  /** Banks asked for (default: the TPM's active banks). */
  readonly banks: readonly BankName[] | undefined;
  readonly bankModes: Readonly<Partial<Record<BankName, BankMode>>> | undefined;
  /** Clock (ms since the epoch): a new segment's `firstSeen`. */
  readonly now: () => number;
}

/** The running kernel's boot id, from `path` (default {@link DEFAULT_BOOT_ID_PATH}). */
export function readKernelBootId(path: string = DEFAULT_BOOT_ID_PATH): string {
  return readFileSync(path, 'latin1').trim();
}

function segmentOf(boot: number, record: BootRecord): BootSegment {
  const modes = record.bankModes;
  return { boot, record, banks: BANKS.filter((b) => modes[b] !== undefined), modes };
}

/** Continues the store's current boot if it is the kernel `kernelBootId`'s, else begins a new segment. */
export async function openBootSegment(sources: SegmentSources, kernelBootId: string): Promise<BootSegment> {
  const { store } = sources;
  const current = store.currentBoot;
  if (current !== undefined) {
    const record = await store.bootRecord(current);
    if (record.kernelBootId === kernelBootId) return segmentOf(current, record);
  }
  const banks = await configuredBanks(sources);
  const bankModes: Partial<Record<BankName, BankMode>> = {};
  for (const bank of banks) bankModes[bank] = sources.bankModes?.[bank] ?? 'native';
  // The boot's first quote only learns resetCount (a TPM reset is a reboot); it is not stored.
  const probe = await sources.quotes.quote(chainedNonceV1(undefined, kernelBootId), inBanks(banks, sources.pcr));
  const info = {
    kernelBootId,
    firstSeen: sources.now(),
    resetCount: probe.parsed.clockInfo.resetCount,
    bankModes,
    endianness: 'le' as const,
    template: 'ima-ng',
    templateHash: 'sha256',
  };
  const boot = await store.beginBoot(info);
  return segmentOf(boot, { ...info, exported: null });
}

/**
 * Begins the segment that follows `segment` after a TPM reset (resetCount moved: the PCRs started
 * over, so this is another boot although the kernel's boot id is the same), with the same metadata.
 */
export async function beginAfterTpmReset(store: ImaStore, segment: BootSegment, resetCount: number, now: number): Promise<BootSegment> {
  const boot = await store.beginBoot({ ...segment.record, firstSeen: now, resetCount });
  return segmentOf(boot, await store.bootRecord(boot));
}

/** The banks a new segment quotes: those asked for that the TPM has active. */
async function configuredBanks(sources: SegmentSources): Promise<readonly BankName[]> {
  const active = await sources.quotes.activeBanks();
  const wanted = sources.banks ?? active;
  const banks = BANKS.filter((b) => wanted.includes(b) && active.includes(b));
  if (banks.length === 0) throw new RangeError(`none of the banks [${wanted.join(', ')}] is active in the TPM [${active.join(', ')}]`);
  return banks;
}
