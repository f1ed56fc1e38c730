/**
 * Replay of a measurement list held in a file: all in this thread for small files, else with the
 * hashing spread over threads, a share of the banks each (the per-bank hash chains are
 * independent: docs/ima-formats.md#pcr-replay). Same PCR values and same errors either way.
 *
 * How the threads share the list: this thread reads the file into the slots of a small ring in a
 * SharedArrayBuffer (memory fixed by the ring, not by the list) and posts one message per chunk to
 * each worker; every thread, this one included, parses the chunk in place (parsing alone took
 * 0.09-0.18 s per 1 M records, the two-bank replay 1.4-1.9 s) and replays its banks; a worker then
 * releases the slot. No per-record message, no copy. This thread takes a share rather than only
 * feeding the workers: one worker fewer is ~11 MiB less peak RSS (a worker's own V8 isolate and
 * heap: 84 MiB with two workers, 73 MiB with this thread and one) for the same speed.
 *
 * Measured with `imakeep replay` (bench/replay.ts: 1 M ima-ng records, sha1 + sha256 native,
 * SHA-1 digests verified; 2 vCPUs shared with other jobs, load average 2.2-3.6; 6 bench runs of 3
 * repeats, 08:38-08:53 UTC 2026-11-22; range of the run medians, middle two in brackets): one
 * thread 548-734 k records/s (610-656 k), peak RSS 55-56 MiB; two threads 487-966 k records/s
 * (777-809 k), 72-73 MiB; evmctl 311-384 k records/s (380-382 k), 5.3 MiB. Peak RSS is the same at
 * 100 k records (within 1 MiB). Two threads
 * do not halve the time: each pays the per-record parse and call overheads (each thread was
 * 0.95-1.2 s busy for its half against 1.4 s for the whole in one), and the other jobs hold part
 * of the second core: in the busiest run (load 3.4) two threads were slower than one.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { BANKS, type BankMode, type BankName } from './record.js';
import { ImaError, type ImaErrorCode } from './errors.js';
import { PcrReplay, type PcrReplayOptions, type PcrReplayState } from './replay.js';
import { replayList, type ListStreamOptions } from './stream.js';

/** Options of {@link replayFile}. */
export interface ReplayFileOptions extends ListStreamOptions {
  /**
   * Threads to spread the banks over, this one included (the others are worker threads). Default:
   * one per available core, at most one per unit of work (a bank, or sha1 with the digest
   * verification), and only this one for a file under {@link PARALLEL_MIN_BYTES}. 0 or 1: only
   * this thread.
   */
  readonly threads?: number;
  /** Bytes read at a time, and the size of each ring slot shared with the workers. Default 1 MiB. */
  readonly chunkBytes?: number;
}

/**
 * Smallest file replayed with workers by default: 16 MiB, ~145 k ima-ng records. Starting a worker
 * and loading its modules costs ~70 ms; from `imakeep replay` wall times (bench/replay.ts, ima-ng,
 * sha1 + sha256, 2 vCPUs, load ~2.8) of 0.24 s / 1.36 s in one thread and 0.27 s / 1.04 s with a
 * worker at 100 k / 1 M records, the worker pays off from ~175 k records (20 MB).
 */
export const PARALLEL_MIN_BYTES = 16 * 1024 * 1024;

/**
 * Read size and ring slot: 1 MiB. With a reused buffer, memory does not depend on it (peak RSS of
 * a 1 M-record replay: 53 MiB with 256 KiB and 1 MiB chunks, 56 MiB with 4 MiB); larger chunks
 * mean fewer messages and let a worker run further ahead of the other.
 */
const DEFAULT_CHUNK_BYTES = 1024 * 1024;

/** Ring slots: a thread can be up to this many chunks ahead of the slowest worker. */
const RING_SLOTS = 4;

/** Part of one thread's share: some banks of one of the replays, and whether it verifies the SHA-1 digests. */
export interface ReplayShare {
  /** Index of the replay in {@link replayFile}'s `replays`. */
  readonly replay: number;
  readonly options: PcrReplayOptions;
}

/** What a worker thread is given (`workerData`). */
export interface ReplayWorkerData {
  readonly ring: SharedArrayBuffer;
  readonly slotBytes: number;
  readonly list: ListStreamOptions;
  readonly shares: readonly ReplayShare[];
}

/** Messages to a worker: a chunk in a ring slot, the end of the list, or stop (another share failed). */
export type ToReplayWorker =
  | { readonly type: 'chunk'; readonly slot: number; readonly length: number }
  | { readonly type: 'end' }
  | { readonly type: 'stop' };

/** An error as it crosses threads (an ImaError is rebuilt from it with the same code, message and place). */
export interface SerializedError {
  readonly code?: ImaErrorCode;
  readonly message: string;
  readonly recordIndex?: number;
  readonly byteOffset?: number;
}

/** Messages from a worker. */
export type FromReplayWorker =
  | { readonly type: 'release'; readonly slot: number }
  | { readonly type: 'done'; readonly states: readonly { readonly replay: number; readonly state: PcrReplayState }[] }
  | { readonly type: 'stopped' }
  | { readonly type: 'failed'; readonly error: SerializedError };

/** Serializes an error for postMessage (structured clone drops an Error's class and fields). */
export function serializeError(e: unknown): SerializedError {
  if (e instanceof ImaError) {
    return {
      code: e.code,
      message: e.message,
      ...(e.recordIndex === undefined ? {} : { recordIndex: e.recordIndex }),
      ...(e.byteOffset === undefined ? {} : { byteOffset: e.byteOffset }),
    };
  }
  return { message: e instanceof Error ? e.message : String(e) };
}

function deserializeError(s: SerializedError): Error {
  if (s.code === undefined) return new Error(s.message);
  const where = { ...(s.recordIndex === undefined ? {} : { recordIndex: s.recordIndex }), ...(s.byteOffset === undefined ? {} : { byteOffset: s.byteOffset }) };
  return new ImaError(s.code, s.message, where, true);
}

/**
 * Hash calls per record of a bank (crypto.hash per-call cost dominates, hash.ts): the extend,
 * plus H_bank(template data) for a native non-SHA-1 bank; the SHA-1 bank extends the listed digest.
 */
function bankCost(bank: BankName, mode: BankMode): number {
  return bank === 'sha1' || mode === 'padded' ? 1 : 2;
}

/**
 * Splits the banks of `replays` over at most `threads` threads, balancing hash calls per record
 * (largest first onto the least loaded). The SHA-1 digest verification (one SHA-1 per record)
 * goes with the replay's sha1 bank, whose extend uses the verified digest, else with its first bank.
 * Throws what `new PcrReplay(options)` throws for malformed options (`IMA_BAD_STATE`). Pure;
 * exported for tests.
 */
export function planShares(replays: readonly PcrReplayOptions[], threads: number): ReplayShare[][] {
  interface Unit {
    readonly replay: number;
    readonly bank: BankName;
    readonly mode: BankMode;
    readonly verify: boolean;
    readonly cost: number;
  }
  const units: Unit[] = replays.flatMap((opts, replay) => {
    // The replay's own reading of its options: their checks, and its default banks.
    const modes = new PcrReplay(opts).banks;
    const banks = BANKS.filter((b) => modes[b] !== undefined);
    const verifier = banks.includes('sha1') ? 'sha1' : banks[0];
    return banks.map((bank) => {
      const mode = modes[bank] ?? 'native';
      const verify = bank === verifier && (opts.verifyDigests ?? true);
      return { replay, bank, mode, verify, cost: bankCost(bank, mode) + (verify ? 1 : 0) };
    });
  });
  const workers = Array.from({ length: Math.max(1, Math.min(threads, units.length)) }, () => ({ load: 0, units: [] as Unit[] }));
  for (const unit of [...units].sort((a, b) => b.cost - a.cost)) {
    const least = workers.reduce((a, b) => (b.load < a.load ? b : a));
    least.load += unit.cost;
    least.units.push(unit);
  }
  return workers.map((w) =>
    replays.flatMap((opts, replay) => {
      const mine = w.units.filter((u) => u.replay === replay);
      if (mine.length === 0) return [];
      const start = opts.start;
      const options: PcrReplayOptions = {
        ...opts,
        banks: Object.fromEntries(mine.map((u) => [u.bank, u.mode])),
        verifyDigests: mine.some((u) => u.verify),
        ...(start === undefined ? {} : { start: Object.fromEntries(mine.flatMap((u) => (start[u.bank] === undefined ? [] : [[u.bank, start[u.bank]]]))) }),
      };
      return [{ replay, options }];
    }),
  );
}

/**
 * Reads a file as a stream of chunks into one reused buffer: each chunk is valid until the next
 * one is asked for (what {@link replayList} needs; nothing to collect per chunk, so memory stays
 * the buffer: a read stream's fresh 256 KiB Buffers piled up to 20 MiB of external memory before
 * V8 freed them in a 1 M-record replay).
 */
export async function* readFileChunks(handle: FileHandle, chunkBytes: number = DEFAULT_CHUNK_BYTES): AsyncGenerator<Uint8Array> {
  const buffer = new Uint8Array(chunkBytes);
  for (;;) {
    const { bytesRead } = await handle.read(buffer, 0, chunkBytes, null);
    if (bytesRead === 0) return;
    yield buffer.subarray(0, bytesRead);
  }
}

/**
 * Replays the list in `file` (a path, or an open handle read from its current position and left
 * open) into one new {@link PcrReplay} per entry of `replays` (each record extends each replay)
 * and returns them in the same order. Errors are those of {@link replayList} in one thread: the
 * same code, message, record index and byte offset, the first by record index (e.g.
 * `IMA_DIGEST_MISMATCH`, `IMA_TRUNCATED`); no replay is returned then.
 */
export async function replayFile(
  file: string | FileHandle,
  replays: readonly PcrReplayOptions[],
  opts: ReplayFileOptions = {},
): Promise<PcrReplay[]> {
  const chunkBytes = opts.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 1) throw new RangeError(`chunkBytes ${chunkBytes} is not a positive integer`);
  const handle = typeof file === 'string' ? await open(file, 'r') : file;
  try {
    const threads = opts.threads ?? ((await handle.stat()).size < PARALLEL_MIN_BYTES ? 1 : availableParallelism());
    const shares = planShares(replays, threads);
    if (shares.length < 2) {
      const local = replays.map((r) => new PcrReplay(r));
      await replayList(readFileChunks(handle, chunkBytes), local, opts);
      return local;
    }
    const states = await replayShared(handle, shares, { format: opts.format, bank: opts.bank, endian: opts.endian }, chunkBytes);
    return replays.map((r, i) => {
      const parts = states.filter((s) => s.replay === i).map((s) => s.state);
      const recordCount = parts[0]?.recordCount ?? r.recordCount ?? 0;
      return PcrReplay.fromState({ recordCount, banks: parts.flatMap((p) => p.banks) }, { endian: r.endian, verifyDigests: r.verifyDigests });
    });
  } finally {
    if (handle !== file) await handle.close();
  }
}

/** A share's outcome: its replays' states, its error, or stopped (another share failed first). */
type ShareOutcome =
  | { readonly kind: 'done'; readonly states: readonly { readonly replay: number; readonly state: PcrReplayState }[] }
  | { readonly kind: 'failed'; readonly error: unknown }
  | { readonly kind: 'stopped' };

/** The record index of an error, for ordering (errors without one sort last). */
function recordIndexOf(e: unknown): number {
  return e instanceof ImaError && e.recordIndex !== undefined ? e.recordIndex : Number.POSITIVE_INFINITY;
}

/**
 * Replays `shares[0]` in this thread and every other share in a worker, all from one ring this
 * thread reads the file into (a slot is refilled once every worker has released it; this thread
 * is done with a chunk when it reads the next). On a share's error, reading stops, the chunks
 * already posted are still replayed by the workers (messages keep their order), then they stop:
 * the error with the smallest record index among all is thrown, which is the one a single thread
 * would have met first.
 */
async function replayShared(
  handle: FileHandle,
  shares: readonly (readonly ReplayShare[])[],
  list: ListStreamOptions,
  slotBytes: number,
): Promise<{ readonly replay: number; readonly state: PcrReplayState }[]> {
  const [localShare = [], ...workerShares] = shares;
  const ring = new SharedArrayBuffer(RING_SLOTS * slotBytes);
  /** Workers still using each slot. */
  const users = new Array<number>(RING_SLOTS).fill(0);
  let wake: (() => void) | undefined;
  let failed = false;
  const poke = (): void => {
    wake?.();
    wake = undefined;
  };

  const workers = workerShares.map((mine) => {
    const data: ReplayWorkerData = { ring, slotBytes, list, shares: mine };
    return new Worker(new URL('./replay-worker.js', import.meta.url), { workerData: data });
  });
  const workerOutcomes = workers.map(
    (worker) =>
      new Promise<ShareOutcome>((resolve) => {
        let outcome: ShareOutcome | undefined;
        const settle = (o: ShareOutcome): void => {
          outcome ??= o;
          if (outcome.kind === 'failed') failed = true;
          poke();
        };
        worker.on('message', (m: FromReplayWorker) => {
          if (m.type === 'release') {
            users[m.slot] = (users[m.slot] ?? 1) - 1;
            poke();
          } else if (m.type === 'done') settle({ kind: 'done', states: m.states });
          else if (m.type === 'stopped') settle({ kind: 'stopped' });
          else settle({ kind: 'failed', error: deserializeError(m.error) });
        });
        worker.once('error', (error) => settle({ kind: 'failed', error }));
        worker.once('exit', (code) => {
          settle({ kind: 'failed', error: new Error(`replay worker exited with code ${code} without a result`) });
          resolve(outcome ?? { kind: 'stopped' });
        });
      }),
  );

  let stopped = false;
  async function* ringChunks(): AsyncGenerator<Uint8Array> {
    for (let seq = 0; ; seq++) {
      const slot = seq % RING_SLOTS;
      while (!failed && (users[slot] ?? 0) > 0) await new Promise<void>((resolve) => (wake = resolve));
      const view = new Uint8Array(ring, slot * slotBytes, slotBytes);
      const bytesRead = failed ? 0 : (await handle.read(view, 0, slotBytes, null)).bytesRead;
      if (failed) stopped = true;
      if (bytesRead === 0 || failed) return;
      users[slot] = workers.length;
      const message: ToReplayWorker = { type: 'chunk', slot, length: bytesRead };
      for (const w of workers) w.postMessage(message);
      yield view.subarray(0, bytesRead);
    }
  }
  const local = localShare.map((share) => ({ index: share.replay, replay: new PcrReplay(share.options) }));
  let localOutcome: ShareOutcome;
  try {
    await replayList(ringChunks(), local.map((l) => l.replay), list);
    localOutcome = stopped ? { kind: 'stopped' } : { kind: 'done', states: local.map((l) => ({ replay: l.index, state: l.replay.toState() })) };
  } catch (e) {
    // After a stop the list was cut short on purpose: an IMA_TRUNCATED then is not the list's.
    localOutcome = stopped ? { kind: 'stopped' } : { kind: 'failed', error: e };
    failed = true;
  }
  const last: ToReplayWorker = { type: failed ? 'stop' : 'end' };
  for (const w of workers) w.postMessage(last);

  const outcomes = [localOutcome, ...(await Promise.all(workerOutcomes))];
  const errors = outcomes.flatMap((o) => (o.kind === 'failed' ? [o.error] : []));
  if (errors.length > 0) throw errors.reduce((a, b) => (recordIndexOf(b) < recordIndexOf(a) ? b : a));
  return outcomes.flatMap((o) => (o.kind === 'done' ? o.states : []));
}
