/**
 * Errors of the IMA codec and replay. Every one carries where it happened: the index of the
 * record (counted from the first record given to the parser or replay) and, for the binary codec,
 * the byte offset of that record in the list.
 */
import { ImakeepError } from '../errors.js';
import type { BankName } from './record.js';

/** Stable codes of {@link ImaError}. */
export type ImaErrorCode =
  /** The list ends inside a record (binary) or inside a line (ASCII). */
  | 'IMA_TRUNCATED'
  /** A length field is 0, larger than the documented bound, or larger than what remains. */
  | 'IMA_BAD_LENGTH'
  /** The template data do not split into the fields of the record's template. */
  | 'IMA_BAD_TEMPLATE'
  /** An ASCII line does not have the kernel's shape. */
  | 'IMA_BAD_ASCII'
  /** A record's SHA-1 template digest is not SHA-1 of its template data. */
  | 'IMA_DIGEST_MISMATCH'
  /** Replayed PCR values differ from the expected ones. */
  | 'IMA_REPLAY_MISMATCH'
  /** A stored replay state or a PCR value given to the replay is malformed. */
  | 'IMA_BAD_STATE';

/** Where an {@link ImaError} happened. */
export interface ImaErrorWhere {
  /** Index of the record concerned, counted from the first record of the input. */
  readonly recordIndex?: number;
  /** Byte offset of that record (binary) or line (ASCII) in the input. */
  readonly byteOffset?: number;
  readonly cause?: unknown;
}

/** An error of the IMA codec or replay, with a stable {@link ImaErrorCode}. */
export class ImaError extends ImakeepError {
  declare readonly code: ImaErrorCode;
  readonly recordIndex: number | undefined;
  readonly byteOffset: number | undefined;

  /** `where` is appended to the message unless `messageSaysWhere` (the message already tells it). */
  constructor(code: ImaErrorCode, message: string, where: ImaErrorWhere = {}, messageSaysWhere = false) {
    const at = messageSaysWhere ? [] : [
      where.recordIndex === undefined ? '' : `record ${where.recordIndex}`,
      where.byteOffset === undefined ? '' : `byte offset ${where.byteOffset}`,
    ].filter((s) => s !== '');
    super(code, at.length === 0 ? message : `${message} (${at.join(', ')})`, { cause: where.cause });
    this.recordIndex = where.recordIndex;
    this.byteOffset = where.byteOffset;
  }
}

/**
 * Replayed PCR value differs from the expected one (code `IMA_REPLAY_MISMATCH`). `recordIndex` is
 * the number of records replayed when the values were compared.
 */
export class ReplayError extends ImaError {
  readonly bank: BankName;
  readonly pcr: number;
  /** Expected PCR value, lowercase hex. */
  readonly expected: string;
  /** Replayed PCR value, lowercase hex. */
  readonly computed: string;

  constructor(bank: BankName, pcr: number, recordCount: number, expected: string, computed: string) {
    super(
      'IMA_REPLAY_MISMATCH',
      `${bank} PCR ${pcr} after ${recordCount} records: expected ${expected}, replayed ${computed}`,
      { recordIndex: recordCount },
      true,
    );
    this.bank = bank;
    this.pcr = pcr;
    this.expected = expected;
    this.computed = computed;
  }
}
