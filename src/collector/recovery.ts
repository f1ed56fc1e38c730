/**
 * Deciding a journaled removal whose outcome was never written (design.md "Recovery", Invariant 3),
 * one function for every path that reads the kernel's part of a log ({@link resolveJournal}: the
 * collector at start, `imakeep log` and `imakeep serve` without a daemon).
 *
 * Flavour `n`: did the kernel remove records T..T+n-1? The intent carries what the list showed
 * before the write (`KernelHeadFacts`): the identity of record T and of the record at T+n. Records
 * only append at the tail and only the collector removes, so the head now is record T (not done)
 * or the former record T+n (done), whatever arrived since: one read of the head decides, at any
 * append rate. Only when those two records are the same bytes (records repeating), or for an
 * intent journaled without the facts, is it decided as before: by comparing the kernel's first
 * records with the stored records at T and at T+n, then by replay against the TPM's PCRs.
 *
 * Flavour `staged`: the staged list never grows, so its length against the journal decides.
 */
import { bytesEqual } from '../base/bytes.js';
import { BANKS, PcrReplay, bankHash, encodeBinaryRecord, type BankName, type ImaRecord, type PcrReplayState } from '../ima/index.js';
import type { ImaStore, Journal, KernelHeadFacts, RemovalIntent } from '../store/index.js';
import type { PcrValue } from '../tpm/index.js';

/** Records compared at the kernel's head when the head's identity alone does not decide. */
export const RECOVERY_HEAD_RECORDS = 1024;
/** Replay rounds of the tie-break (each reads the PCRs, the list, the PCRs). */
export const RECOVERY_REPLAY_ROUNDS = 5;

/** A record's identity in `KernelHeadFacts`: SHA-256 of its bytes in the SHA-1 binary list. */
export function recordIdentity(rec: ImaRecord): Uint8Array {
  // OpenSSL's one-shot, not @noble/hashes: called twice a removal, too seldom for V8 to compile
  // noble's JavaScript (interpreted, ~1 ms a call: `--cpu-prof` of the ingest bench).
  return bankHash('sha256', encodeBinaryRecord(rec));
}

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
  /** Rounds at most (records arriving can leave a round undecided). */
  readonly attempts: number;
}

/**
 * Replays the kernel's list after each reading's stored prefix. The PCRs read before the list are
 * the extend of every record logged by then (the kernel logs before it extends), all of them in
 * the list read after: the true reading passes through those values at some prefix. A round
 * decides when exactly one reading does, or, when the PCRs did not move while the list was read,
 * when exactly one reading's whole replay equals them. undefined when no round decides (records
 * repeating with a period dividing n fit both).
 */
export async function tieBreakByReplay(reads: TieBreakReads): Promise<'done' | 'not-done' | undefined> {
  for (let round = 0; round < reads.attempts; round++) {
    const before = await reads.readPcrs();
    const notDone = PcrReplay.fromState(reads.atT, { verifyDigests: false });
    const done = PcrReplay.fromState(reads.atTn, { verifyDigests: false });
    let notDoneFitsBefore = notDone.matches(before, reads.pcr);
    let doneFitsBefore = done.matches(before, reads.pcr);
    for await (const batch of reads.kernelList()) {
      for (const rec of batch) {
        notDone.extend(rec);
        done.extend(rec);
        if (rec.pcr !== reads.pcr) continue;
        notDoneFitsBefore ||= notDone.matches(before, reads.pcr);
        doneFitsBefore ||= done.matches(before, reads.pcr);
      }
    }
    const after = await reads.readPcrs();
    const stable = BANKS.every((bank) => {
      const b = before[bank];
      const a = after[bank];
      return b === undefined ? a === undefined : a !== undefined && bytesEqual(a, b);
    });
    if (stable) {
      const fitsDone = done.matches(after, reads.pcr);
      const fitsNotDone = notDone.matches(after, reads.pcr);
      if (fitsDone !== fitsNotDone) return fitsDone ? 'done' : 'not-done';
    }
    if (doneFitsBefore !== notDoneFitsBefore) return doneFitsBefore ? 'done' : 'not-done';
  }
  return undefined;
}

/**
 * Why a pending removal is left undecided (status `recovery.reason`, metric label): removal and
 * the kernel's part of the log wait, the stored log is served, and every cycle tries again.
 * - `ambiguous`: both readings fit the kernel's records (records repeating) and the PCR replay
 *   did not tell them apart (or no TPM was at hand: a reader without the daemon);
 * - `kernel-diverged`: the kernel's head is neither record T nor the former record T+n
 *   (something else removed or staged records);
 * - `staged-missing`: the journal says a staged list is there, the kernel has none;
 * - `staged-mismatch`: the kernel's staged list is not as long as the journal says.
 */
export type RecoveryPauseReason = (typeof RECOVERY_PAUSE_REASONS)[number];

/** Every {@link RecoveryPauseReason} (metric labels). */
export const RECOVERY_PAUSE_REASONS = ['ambiguous', 'kernel-diverged', 'staged-missing', 'staged-mismatch'] as const;

/** The kernel reads {@link resolveJournal} makes. */
export interface RecoveryKernelReads {
  /** Records in the staged list (0 without one or without the staging interface). */
  stagedListLength(): Promise<number>;
  /** The current list's record counter and its first `max` records (one read from the head). */
  currentHead(max: number): Promise<{ readonly count: number; readonly records: readonly ImaRecord[]; readonly complete: boolean }>;
  /** The whole current list, from its head, in batches (the replay tie-break). */
  currentList(): AsyncIterable<readonly ImaRecord[]>;
}

/** The store (and, for the collector, TPM) reads {@link resolveJournal} makes. */
export interface RecoveryReads {
  readonly kernel: RecoveryKernelReads;
  /** Up to `max` stored records from global index `from` on. */
  storedRange(from: number, max: number): Promise<readonly ImaRecord[]>;
  /** Replay state of stored records 0..count-1. */
  replayAt(count: number): Promise<PcrReplayState>;
  /** The TPM's values of the IMA PCR; absent for a reader without a TPM (it cannot break a tie). */
  readonly tpm?: RecoveryTpmReads;
}

/** The TPM read of the replay tie-break. */
export interface RecoveryTpmReads {
  readonly pcr: number;
  readPcrs(): Promise<Partial<Record<BankName, Uint8Array>>>;
}

/** The journal write that records a resolution. */
export type JournalAction =
  | { readonly kind: 'none' }
  | { readonly kind: 'outcome'; readonly done: boolean }
  /** A staged list is there and not journaled yet: journal it (and first an intent, if none is pending). */
  | { readonly kind: 'adopt-staged'; readonly count: number; readonly journalIntent: boolean };

/** Where the boot's records are in the kernel once the pending removal is decided, or why it is not. */
export type JournalResolution =
  | { readonly settled: true; readonly removed: number; readonly stagedCount: number | null; readonly action: JournalAction }
  | { readonly settled: false; readonly removed: number; readonly reason: RecoveryPauseReason; readonly message: string };

type Decision = boolean | { readonly reason: RecoveryPauseReason; readonly message: string };

/**
 * Resolves the journal of a boot against the kernel: the pending removal decided (or left
 * undecided, with the reason), a staged list found or gone. Writes nothing: the caller journals
 * `action` (the collector) or only reads with the result (`imakeep log`: the facts do not move,
 * so the collector's later decision is the same).
 */
export async function resolveJournal(journal: Journal, reads: RecoveryReads): Promise<JournalResolution> {
  const T = journal.removed;
  const stagedOnDisk = await reads.kernel.stagedListLength();
  const pending = journal.pending;
  const undecided = (reason: RecoveryPauseReason, message: string): JournalResolution => ({ settled: false, removed: T, reason, message });
  if (pending !== null && pending.flavor === 'n') {
    const done = await decideN(T, pending, reads);
    if (typeof done !== 'boolean') return undecided(done.reason, done.message);
    return { settled: true, removed: done ? T + pending.n : T, stagedCount: null, action: { kind: 'outcome', done } };
  }
  if (pending !== null) {
    const step = journal.staged;
    if (stagedOnDisk === 0) {
      // No staged list: `A` never happened (no staged state yet), or `D` did (only after `stored`).
      if (step !== null && step.step !== 'stored') return undecided('staged-missing', `the journal says ${step.count} records are staged, the kernel has no staged list`);
      return { settled: true, removed: T + (step?.count ?? 0), stagedCount: null, action: { kind: 'outcome', done: step !== null } };
    }
    if (step === null) return { settled: true, removed: T, stagedCount: stagedOnDisk, action: { kind: 'adopt-staged', count: stagedOnDisk, journalIntent: false } };
    if (step.count !== stagedOnDisk) return undecided('staged-mismatch', `the journal says ${step.count} records are staged, the kernel's staged list holds ${stagedOnDisk}`);
    return { settled: true, removed: T, stagedCount: step.count, action: { kind: 'none' } };
  }
  // A staged list nobody journaled (another agent's `A`): take it over like our own.
  if (stagedOnDisk > 0) return { settled: true, removed: T, stagedCount: stagedOnDisk, action: { kind: 'adopt-staged', count: stagedOnDisk, journalIntent: true } };
  return { settled: true, removed: T, stagedCount: null, action: { kind: 'none' } };
}

/** Decides a pending `n` removal of records T..T+n-1: true = done. */
async function decideN(T: number, intent: RemovalIntent, reads: RecoveryReads): Promise<Decision> {
  const facts = intent.kernelHead;
  if (facts !== undefined) {
    const head = await reads.kernel.currentHead(1);
    const byFacts = decideByHeadFacts(facts, head.records[0], head.count);
    if (byFacts !== undefined) return byFacts;
  }
  return decideByRecords(T, intent.n, reads);
}

/**
 * The decision from the journaled facts and one read of the head, or undefined when they do not
 * decide (record T and the former record T+n are the same bytes, or the list ended at T+n and its
 * first record since is a copy of record T).
 */
export function decideByHeadFacts(facts: KernelHeadFacts, head: ImaRecord | undefined, count: number): Decision | undefined {
  // An empty list: "not done" would still hold record T.
  if (head === undefined) return true;
  const id = recordIdentity(head);
  if (!bytesEqual(id, facts.first)) {
    if (facts.next === null || bytesEqual(id, facts.next)) return true;
    return { reason: 'kernel-diverged', message: "the kernel's first record is neither record T nor the record that followed the removed ones" };
  }
  if (facts.next !== null && !bytesEqual(facts.next, facts.first)) return false;
  // Only the removal shrinks the current list (records append, nothing else removes).
  if (count < facts.listed) return true;
  return undefined;
}

/** The decision by records and replay (intents without facts, or facts that do not decide). */
async function decideByRecords(T: number, n: number, reads: RecoveryReads): Promise<Decision> {
  const head = await reads.kernel.currentHead(RECOVERY_HEAD_RECORDS);
  const judgement = judgeRemoval({
    n,
    kernelHead: head.records,
    kernelHeadComplete: head.complete,
    storedAtT: await reads.storedRange(T, head.records.length),
    storedAtTn: await reads.storedRange(T + n, head.records.length),
  });
  if (judgement === 'done' || judgement === 'not-done') return judgement === 'done';
  const what = `cannot tell whether records ${T}..${T + n - 1} were removed`;
  if (judgement === 'neither') return { reason: 'kernel-diverged', message: `${what}: the kernel's head matches neither reading` };
  const tpm = reads.tpm;
  if (tpm !== undefined) {
    const decided = await tieBreakByReplay({
      atT: await reads.replayAt(T),
      atTn: await reads.replayAt(T + n),
      kernelList: () => reads.kernel.currentList(),
      readPcrs: () => tpm.readPcrs(),
      pcr: tpm.pcr,
      attempts: RECOVERY_REPLAY_ROUNDS,
    });
    if (decided !== undefined) return decided === 'done';
  }
  return { reason: 'ambiguous', message: `${what}: both readings fit the kernel's records${tpm === undefined ? ' (the daemon decides by replay against the TPM)' : ' and the PCRs'}` };
}

/**
 * Resolves `boot`'s journal ({@link resolveJournal}) and journals the decision: the pending
 * removal's outcome, or a staged list taken over (with an intent first when none is pending). An
 * undecided removal writes nothing. The collector's recovery: when a segment opens, and at a cycle
 * that finds a removal pending (a failed one) or undecided before.
 */
export async function settleJournal(store: ImaStore, boot: number, reads: RecoveryReads, now: () => number): Promise<JournalResolution> {
  const journal = await store.journal(boot);
  const resolution = await resolveJournal(journal, reads);
  if (!resolution.settled) return resolution;
  const action = resolution.action;
  if (action.kind === 'outcome') await store.journalOutcome(boot, { done: action.done });
  if (action.kind === 'adopt-staged') {
    if (action.journalIntent) await store.journalIntent(boot, { flavor: 'staged', removed: journal.removed, n: 0, at: now() });
    await store.journalStaged(boot, { step: 'staged', count: action.count });
  }
  return resolution;
}
