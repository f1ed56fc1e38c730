/**
 * PCR replay of a measurement list for every bank (docs/ima-formats.md#pcr-replay): for each record, in order,
 * PCR[bank][pcr] = H_bank(PCR ‖ extended digest), the extended digest being the bank's template
 * digest (native H_bank(template data), or the SHA-1 digest zero-padded) or, for a violation,
 * 0xFF..FF (0xFF x 20 ‖ 0.. for a padded bank).
 */
import { BANKS, DIGEST_SIZE, type BankMode, type BankName, type ImaRecord } from './record.js';
import { ImaError, ReplayError } from './errors.js';
import { bytesEqual } from '../base/bytes.js';
import { bankHashEquals, bankHashInto, fromHex, isAllZero, toHex, type Endian } from './hash.js';
import { extendedDigest, templateHashInput } from './digest.js';

/** PCR values by index. */
export type PcrValues = Readonly<Record<number, Uint8Array>>;

/** Options of a {@link PcrReplay}. */
export interface PcrReplayOptions {
  /**
   * Banks to replay and how the kernel extended each. Default: all four banks, `native` (every
   * bank costs one hash of the template data and one extend per record: name only the TPM's banks).
   */
  readonly banks?: Partial<Record<BankName, BankMode>>;
  /** PCR values to start from (a checkpoint); PCRs not given start at zero. */
  readonly start?: Partial<Record<BankName, PcrValues>>;
  /** Records already replayed into `start` (so counts stay global). Default 0. */
  readonly recordCount?: number;
  /** Byte order of the records' template data (the list's). Default `le`. */
  readonly endian?: Endian;
  /**
   * Check each record's SHA-1 template digest against SHA-1 of its data (`IMA_DIGEST_MISMATCH`),
   * so that the sha1 bank, which extends the digest as listed, also vouches for the data.
   * Default true; costs one SHA-1 per record.
   */
  readonly verifyDigests?: boolean;
}

/** Serializable replay state: plain numbers, strings and Uint8Arrays (CBOR-friendly). */
export interface PcrReplayState {
  readonly recordCount: number;
  readonly banks: readonly {
    readonly bank: BankName;
    readonly mode: BankMode;
    readonly pcrs: readonly { readonly pcr: number; readonly value: Uint8Array }[];
  }[];
}

interface BankReplay {
  readonly bank: BankName;
  readonly mode: BankMode;
  readonly size: number;
  /**
   * Per PCR index, its value in `[0, size)` followed by room for the digest extended next: the
   * extend hashes this one contiguous buffer and writes the result over its first half, so it
   * allocates nothing and copies nothing but the digest (per-call overhead dominates: hash.ts).
   */
  readonly registers: Map<number, Uint8Array>;
  /** What a violation extends into this bank, computed once. */
  readonly violation: Uint8Array;
}

const VIOLATION_PROBE: ImaRecord = { pcr: 0, digest: new Uint8Array(DIGEST_SIZE.sha1), template: '', data: new Uint8Array(0) };

function badState(message: string): ImaError {
  return new ImaError('IMA_BAD_STATE', message);
}

function isBankName(name: string): name is BankName {
  return (BANKS as readonly string[]).includes(name);
}

/** Replays records into the PCRs of several banks at once. */
export class PcrReplay {
  readonly #banks: BankReplay[];
  readonly #endian: Endian;
  readonly #verify: boolean;
  #count: number;

  constructor(opts: PcrReplayOptions = {}) {
    const banks = opts.banks ?? { sha1: 'native', sha256: 'native', sha384: 'native', sha512: 'native' };
    this.#endian = opts.endian ?? 'le';
    this.#verify = opts.verifyDigests ?? true;
    this.#count = opts.recordCount ?? 0;
    if (!Number.isSafeInteger(this.#count) || this.#count < 0) throw badState(`record count ${this.#count} is not a count`);
    this.#banks = BANKS.filter((b) => banks[b] !== undefined).map((bank) => {
      const mode = banks[bank] ?? 'native';
      const size = DIGEST_SIZE[bank];
      const registers = new Map<number, Uint8Array>();
      for (const [pcr, value] of Object.entries(opts.start?.[bank] ?? {})) {
        if (!/^\d+$/.test(pcr) || value.length !== size) throw badState(`start value of ${bank} PCR ${pcr} is not ${size} bytes`);
        const register = new Uint8Array(2 * size);
        register.set(value);
        registers.set(Number(pcr), register);
      }
      return { bank, mode, size, registers, violation: extendedDigest(VIOLATION_PROBE, bank, mode) };
    });
    if (this.#banks.length === 0) throw badState('no bank to replay');
  }

  /** Rebuilds a replay from {@link toState}; throws `IMA_BAD_STATE` if the state is malformed. */
  static fromState(state: PcrReplayState, opts: Pick<PcrReplayOptions, 'endian' | 'verifyDigests'> = {}): PcrReplay {
    if (!Number.isSafeInteger(state.recordCount) || state.recordCount < 0 || !Array.isArray(state.banks)) {
      throw badState('replay state lacks recordCount or banks');
    }
    const banks: Partial<Record<BankName, BankMode>> = {};
    const start: Partial<Record<BankName, Record<number, Uint8Array>>> = {};
    for (const b of state.banks) {
      const bank: string = b.bank;
      if (!isBankName(bank) || (b.mode !== 'native' && b.mode !== 'padded') || !Array.isArray(b.pcrs)) {
        throw badState(`replay state has a malformed bank entry`);
      }
      banks[bank] = b.mode;
      const values: Record<number, Uint8Array> = {};
      for (const p of b.pcrs) {
        if (!Number.isSafeInteger(p.pcr) || p.pcr < 0 || !(p.value instanceof Uint8Array)) {
          throw badState(`replay state has a malformed ${bank} PCR entry`);
        }
        values[p.pcr] = p.value;
      }
      start[bank] = values;
    }
    return new PcrReplay({ ...opts, banks, start, recordCount: state.recordCount });
  }

  /** Records replayed (including those before a checkpoint). */
  get recordCount(): number {
    return this.#count;
  }

  /** The replayed banks and their modes. */
  get banks(): Partial<Record<BankName, BankMode>> {
    return Object.fromEntries(this.#banks.map((b) => [b.bank, b.mode]));
  }

  /**
   * Extends one record (the SHA-1 form: 20-byte digest, zero for a violation) into every bank.
   * Throws `IMA_DIGEST_MISMATCH` (when verifying) or `IMA_BAD_LENGTH`, leaving the state unchanged.
   */
  extend(rec: ImaRecord): void {
    const index = this.#count;
    if (rec.digest.length !== DIGEST_SIZE.sha1) {
      throw new ImaError('IMA_BAD_LENGTH', `SHA-1 template digest of ${rec.digest.length} bytes`, { recordIndex: index });
    }
    const violation = isAllZero(rec.digest);
    let input: Uint8Array | undefined;
    if (!violation) {
      input = templateHashInput(rec.template, rec.data, this.#endian, index);
      if (this.#verify && !bankHashEquals('sha1', input, rec.digest)) {
        throw new ImaError('IMA_DIGEST_MISMATCH', `SHA-1 template digest ${toHex(rec.digest)} is not SHA-1 of the template data`, {
          recordIndex: index,
        });
      }
    }
    for (const b of this.#banks) {
      let register = b.registers.get(rec.pcr);
      if (register === undefined) {
        register = new Uint8Array(2 * b.size);
        b.registers.set(rec.pcr, register);
      }
      if (input === undefined) register.set(b.violation, b.size);
      else if (b.bank === 'sha1') register.set(rec.digest, b.size);
      else if (b.mode === 'native') bankHashInto(b.bank, input, register, b.size);
      else register.fill(0, b.size).set(rec.digest, b.size);
      bankHashInto(b.bank, register, register, 0);
    }
    this.#count = index + 1;
  }

  /** Current value of a PCR of a replayed bank (zero if never extended and not in `start`). */
  value(bank: BankName, pcr: number): Uint8Array {
    const b = this.#bank(bank);
    const v = b.registers.get(pcr);
    return v === undefined ? new Uint8Array(b.size) : v.slice(0, b.size);
  }

  /** PCR indexes extended or given a start value, ascending. */
  pcrIndexes(): number[] {
    const all = new Set<number>();
    for (const b of this.#banks) for (const pcr of b.registers.keys()) all.add(pcr);
    return [...all].sort((x, y) => x - y);
  }

  /** A plain copy of the state (see {@link PcrReplayState}). */
  toState(): PcrReplayState {
    return {
      recordCount: this.#count,
      banks: this.#banks.map((b) => ({
        bank: b.bank,
        mode: b.mode,
        pcrs: [...b.registers.entries()].sort(([x], [y]) => x - y).map(([pcr, register]) => ({ pcr, value: register.slice(0, b.size) })),
      })),
    };
  }

  /**
   * Compares with expected PCR values (Uint8Array or hex) of replayed banks; throws
   * {@link ReplayError} (`IMA_REPLAY_MISMATCH`) at the first difference, banks in BANKS order and
   * PCRs ascending. Throws `IMA_BAD_STATE` for a bank not replayed.
   */
  check(expected: Partial<Record<BankName, Readonly<Record<number, Uint8Array | string>>>>): void {
    for (const bank of BANKS) {
      const pcrs = expected[bank];
      if (pcrs === undefined) continue;
      const entries = Object.entries(pcrs).map(([pcr, v]) => [Number(pcr), v] as const).sort(([x], [y]) => x - y);
      for (const [pcr, want] of entries) {
        const wantBytes = typeof want === 'string' ? fromHex(want) : want;
        const got = this.value(bank, pcr);
        if (wantBytes === null || !bytesEqual(wantBytes, got)) {
          throw new ReplayError(bank, pcr, this.#count, typeof want === 'string' ? want.toLowerCase() : toHex(want), toHex(got));
        }
      }
    }
  }

  /** True if `pcr` of every bank in `expected` equals its value. */
  matches(expected: Partial<Record<BankName, Uint8Array>>, pcr: number): boolean {
    for (const bank of BANKS) {
      const want = expected[bank];
      if (want !== undefined && !this.#holds(bank, pcr, want)) return false;
    }
    return true;
  }

  /** True if PCR `pcr` of `bank` equals `want`, compared in place (matches() runs per record). */
  #holds(bank: BankName, pcr: number, want: Uint8Array): boolean {
    const b = this.#bank(bank);
    if (want.length !== b.size) return false;
    const register = b.registers.get(pcr);
    for (let i = 0; i < b.size; i++) if (want[i] !== (register === undefined ? 0 : register[i])) return false;
    return true;
  }

  #bank(bank: BankName): BankReplay {
    const b = this.#banks.find((x) => x.bank === bank);
    if (b === undefined) throw badState(`bank ${bank} is not replayed (replayed: ${this.#banks.map((x) => x.bank).join(', ')})`);
    return b;
  }
}

/** Options of {@link replayUntilMatch}. */
export interface ReplayUntilMatchOptions {
  /** Replay to continue (e.g. from a checkpoint); default a new one over the expected banks, native. */
  readonly replay?: PcrReplay;
  /** PCR the quote covers; default 10 (the IMA PCR). */
  readonly pcr?: number;
}

/**
 * Replays `records` until PCR `pcr` of every bank in `expected` (e.g. a TPM quote's PCR 10 values)
 * equals the replay, and returns the record count at that point (the replay's `recordCount`,
 * which includes a checkpoint's records), the smallest such count; null if the records run out
 * first. Records after it are normal ("Replay the event log until the quote matches and then
 * discard extra events", docs/ima-formats.md#pcr-replay).
 */
export function replayUntilMatch(
  records: Iterable<ImaRecord>,
  expected: Partial<Record<BankName, Uint8Array>>,
  opts: ReplayUntilMatchOptions = {},
): number | null {
  const { replay, pcr } = untilMatchSetup(expected, opts);
  if (replay.matches(expected, pcr)) return replay.recordCount;
  for (const rec of records) {
    replay.extend(rec);
    if (rec.pcr === pcr && replay.matches(expected, pcr)) return replay.recordCount;
  }
  return null;
}

/** {@link replayUntilMatch} over an async source (a stream, a store cursor). */
export async function replayUntilMatchAsync(
  records: AsyncIterable<ImaRecord> | Iterable<ImaRecord>,
  expected: Partial<Record<BankName, Uint8Array>>,
  opts: ReplayUntilMatchOptions = {},
): Promise<number | null> {
  const { replay, pcr } = untilMatchSetup(expected, opts);
  if (replay.matches(expected, pcr)) return replay.recordCount;
  for await (const rec of records) {
    replay.extend(rec);
    if (rec.pcr === pcr && replay.matches(expected, pcr)) return replay.recordCount;
  }
  return null;
}

function untilMatchSetup(
  expected: Partial<Record<BankName, Uint8Array>>,
  opts: ReplayUntilMatchOptions,
): { replay: PcrReplay; pcr: number } {
  const banks = Object.fromEntries(BANKS.filter((b) => expected[b] !== undefined).map((b) => [b, 'native' as const]));
  return { replay: opts.replay ?? new PcrReplay({ banks }), pcr: opts.pcr ?? 10 };
}

/** One PCR's value as a replay holds it. */
export interface ReplayedPcr {
  readonly bank: BankName;
  readonly pcr: number;
  readonly value: Uint8Array;
}

/**
 * What a replay is driven towards: PCRs and a test of their values. A TPM quote is one
 * (`quoteTarget` of src/tpm: its selection, and "the values hash to its pcrDigest"); the quote
 * carries only that digest (TPM 2.0 Part 1 §18.4.1), so the values it attests are found by replay.
 */
export interface ReplayTarget {
  /** The PCRs tested, in the order `fits` expects them. */
  readonly pcrs: readonly { readonly bank: BankName; readonly pcr: number }[];
  fits(values: readonly ReplayedPcr[]): boolean;
}

/**
 * Extends `replay` with `records` until the replayed values of the target's PCRs fit it, and
 * returns those values (the target's order), or undefined when the records run out first. Tests
 * before the first record and after each record of a target PCR, so `replay` is left at the
 * shortest prefix that fits: the kernel adds a record to the list before it extends the PCR
 * (security/integrity/ima/ima_queue.c, `ima_add_template_entry`: `ima_add_digest_entry`, then
 * `ima_pcr_extend`), so the state a TPM quoted is the replay of some prefix of the log, and records
 * after it are normal. Replaying instead of reading PCRs after the quote: on a busy device PCR 10
 * moves between the two commands (measured on the emulator: quote + PCR_Read gave up after 5 rounds).
 */
export async function replayUntilFits(
  target: ReplayTarget,
  replay: PcrReplay,
  records: AsyncIterable<ImaRecord> | Iterable<ImaRecord>,
): Promise<ReplayedPcr[] | undefined> {
  const targetPcrs = new Set(target.pcrs.map((r) => r.pcr));
  const first = fitsNow(target, replay);
  if (first !== undefined) return first;
  for await (const record of records) {
    replay.extend(record);
    if (!targetPcrs.has(record.pcr)) continue;
    const values = fitsNow(target, replay);
    if (values !== undefined) return values;
  }
  return undefined;
}

/** The replayed values of the target's PCRs (the target's order) if they fit it now; else undefined. */
export function fitsNow(target: ReplayTarget, replay: PcrReplay): ReplayedPcr[] | undefined {
  const values = target.pcrs.map(({ bank, pcr }) => ({ bank, pcr, value: replay.value(bank, pcr) }));
  return target.fits(values) ? values : undefined;
}
