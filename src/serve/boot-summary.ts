/**
 * One line per boot segment of a store, as `GET /v1/status` and `imakeep status` (without a
 * daemon) show it: what is stored, checkpointed, removed from the kernel and exported.
 */
import type { ImaStore, RemovalIntent } from '../store/index.js';

/** A boot segment's counters (JSON-serialisable). */
export interface BootSummary {
  readonly boot: number;
  readonly kernelBootId: string;
  readonly firstSeen: number;
  /** Records 0..stored-1 are in committed chunks. */
  readonly stored: number;
  /** Records covered by the last checkpoint. */
  readonly checkpointed: number;
  /** T: records removed from the kernel. */
  readonly removed: number;
  /** A journaled removal without outcome, or null. */
  readonly pendingRemoval: RemovalIntent | null;
  /** Records 0..exported-1 were exported and acknowledged (0 before the first export). */
  readonly exported: number;
}

/** Every boot segment of `store`, oldest first. */
export async function bootSummaries(store: ImaStore): Promise<BootSummary[]> {
  const boots: BootSummary[] = [];
  for await (const { boot, record } of store.boots()) {
    const journal = await store.journal(boot);
    boots.push({
      boot,
      kernelBootId: record.kernelBootId,
      firstSeen: record.firstSeen,
      stored: await store.storedCount(boot),
      checkpointed: (await store.lastCheckpoint(boot))?.count ?? 0,
      removed: journal.removed,
      pendingRemoval: journal.pending,
      exported: record.exported?.cursor ?? 0,
    });
  }
  return boots;
}
