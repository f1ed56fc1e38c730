/**
 * Deciding a journaled removal whose outcome was never written (design.md "Recovery", Invariant 3):
 * did the kernel remove records T..T+n-1 or not? First by comparing the kernel's first records with
 * the stored records at T and at T+n; when both fit (periodic data: the same records repeat with a
 * period dividing n), by replay: the reading whose concatenated log replays to the TPM's PCRs now
 * is the true one. Pure except for the reads passed in.
 */
import { BANKS, PcrReplay, bytesEqual, type BankName, type ImaRecord, type PcrReplayState } from '../ima/index.js';
import type { PcrValue } from '../tpm/index.js';

/** True if two records are the same bytes (pcr, digest, template, data). */
export function sameRecord(a: ImaRecord, b: ImaRecord): boolean {
  return a.pcr === b.pcr && a.template === b.template && bytesEqual(a.digest, b.digest) && bytesEqual(a.data, b.data);
}

/** What the kernel and the store show around a removal of `n` records at T. */
export interface RemovalEvidence {
  readonly n: number;
  /** The kernel's current list from its head (a prefix of it). */
  readonly kernelHead: readonly ImaRecord[];
  /** True if `kernelHead` is the whole list. */
  readonly kernelHeadComplete: boolean;
  /** Stored records from T on (as many as the head holds, fewer if not stored). */
  readonly storedAtT: readonly ImaRecord[];
  /** Stored records from T+n on. */
  readonly storedAtTn: readonly ImaRecord[];
}

/** Which readings of a pending removal fit what the kernel shows. */
export type RemovalJudgement = 'done' | 'not-done' | 'ambiguous' | 'neither';

function prefixAgrees(kernel: readonly ImaRecord[], stored: readonly ImaRecord[]): boolean {
  const overlap = Math.min(kernel.length, stored.length);
  for (let i = 0; i < overlap; i++) {
    const k = kernel[i];
    const s = stored[i];
    if (k === undefined || s === undefined || !sameRecord(k, s)) return false;
  }
  return true;
}

/**
 * Judges by data. "Not done": the list still starts with the stored records at T and holds at
 * least n records. "Done": the list starts with the stored records at T+n (an empty list fits
 * only this reading). Records past the stored ones are not compared: they arrived later.
 */
export function judgeRemoval(e: RemovalEvidence): RemovalJudgement {
  const tooShortForNotDone = e.kernelHeadComplete && e.kernelHead.length < e.n;
  const notDone = !tooShortForNotDone && prefixAgrees(e.kernelHead, e.storedAtT);
  const done = prefixAgrees(e.kernelHead, e.storedAtTn);
  if (done && notDone) return 'ambiguous';
  if (done) return 'done';
  return notDone ? 'not-done' : 'neither';
}

/** PCR values by bank, for {@link PcrReplay.matches}. */
export function pcrsByBank(values: readonly PcrValue[], pcr: number): Partial<Record<BankName, Uint8Array>> {
  const out: Partial<Record<BankName, Uint8Array>> = {};
  for (const v of values) if (v.pcr === pcr) out[v.bank] = v.value;
  return out;
}

/** The reads {@link tieBreakByReplay} needs. */
export interface TieBreakReads {
  /** Replay of stored records 0..T-1 ("not done" reading) and 0..T+n-1 ("done" reading). */
  readonly atT: PcrReplayState;
  readonly atTn: PcrReplayState;
  /** The kernel's whole current list, from its head. */
  kernelList(): AsyncIterable<readonly ImaRecord[]>;
  /** The TPM's PCR values now. */
  readPcrs(): Promise<Partial<Record<BankName, Uint8Array>>>;
  readonly pcr: number;
  /** Rounds when the PCRs moved while the list was read (records arriving). */
  readonly attempts: number;
}

/**
 * Replays the kernel's list after each reading's stored prefix and keeps the one whose end equals
 * the PCRs read before and after (unchanged in between, so no record was logged and not yet
 * extended). undefined when no round gives exactly one fitting reading.
 */
export async function tieBreakByReplay(reads: TieBreakReads): Promise<'done' | 'not-done' | undefined> {
  for (let round = 0; round < reads.attempts; round++) {
    const before = await reads.readPcrs();
    const notDone = PcrReplay.fromState(reads.atT, { verifyDigests: false });
    const done = PcrReplay.fromState(reads.atTn, { verifyDigests: false });
    for await (const batch of reads.kernelList()) {
      for (const rec of batch) {
        notDone.extend(rec);
        done.extend(rec);
      }
    }
    const after = await reads.readPcrs();
    const stable = BANKS.every((bank) => {
      const b = before[bank];
      const a = after[bank];
      return b === undefined ? a === undefined : a !== undefined && bytesEqual(a, b);
    });
    if (!stable) continue;
    const fitsDone = done.matches(after, reads.pcr);
    const fitsNotDone = notDone.matches(after, reads.pcr);
    if (fitsDone !== fitsNotDone) return fitsDone ? 'done' : 'not-done';
  }
  return undefined;
}
