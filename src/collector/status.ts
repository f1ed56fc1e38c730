/**
 * What the collector reports: `status()` (the HTTP API's `GET /v1/status`, `imakeep status`), the
 * report of one cycle, and the status file `imakeep status` reads while the daemon holds the store.
 */
import { renameSync, writeFileSync } from 'node:fs';
import type { Flavor } from './config.js';
import type { MetricsSnapshot } from './metrics.js';
import type { RecoveryPauseReason } from './recovery.js';

/** A condition that stops removal until it clears (reported in status). */
export interface CollectorCondition {
  readonly code: string;
  readonly message: string;
  /** When it was last seen (ms since the epoch). */
  readonly at: number;
}

/** A pending removal left undecided: removal and the kernel's part of the log wait (recovery.ts). */
export interface RecoveryPause {
  readonly reason: RecoveryPauseReason;
  readonly message: string;
  /** Records removed as journaled (records before it are removed for certain). */
  readonly removed: number;
  /** When it was last tried (ms since the epoch). */
  readonly at: number;
}

/** What `status()` reports. */
export type CollectorStatus = {
  readonly boot: number;
  readonly kernelBootId: string;
  readonly resetCount: number | null;
  readonly flavor: Flavor;
  readonly flavorReason: string;
  /** Records removed from the kernel so far in this boot (design.md's T). */
  readonly removed: number;
  /** Records 0..stored-1 are in committed chunks. */
  readonly stored: number;
  /** Records read from the kernel (stored or in the open chunk). */
  readonly drained: number;
  /** Records in the staged list, or null. */
  readonly staged: number | null;
  /** Records the kernel holds as of the last drain (drained − removed). */
  readonly kernelRecords: number;
  /** Modeled kernel memory of those records (docs/kernel.md#kernel-memory-per-record), bytes. */
  readonly kernelBytesModel: number;
  readonly lastCheckpoint: { readonly count: number } | null;
  /** Why removal is stopped for this boot (ESTALE: kexec/reboot under way), or null. */
  readonly removalHalted: string | null;
  /** A pending removal that could not be decided (retried every cycle), or null. */
  readonly recovery: RecoveryPause | null;
  /** The last failure, cleared by the next clean cycle. */
  readonly condition: CollectorCondition | null;
  readonly metrics: MetricsSnapshot;
  readonly updatedAt: number;
};

/** What one cycle did. */
export interface CycleReport {
  readonly boot: number;
  readonly drained: number;
  readonly stored: number;
  readonly checkpoint: number | null;
  readonly removed: number;
  readonly durationMs: number;
}

/**
 * Writes `status` as JSON to `path` (write-then-rename: readers never see half a file). Errors (a
 * full disk) are ignored: status is advisory and the condition is in the status itself.
 */
export function writeStatusFile(path: string, status: CollectorStatus): void {
  try {
    writeFileSync(`${path}.tmp`, `${JSON.stringify(status, null, 2)}\n`);
    renameSync(`${path}.tmp`, path);
  } catch {
    // see above
  }
}
