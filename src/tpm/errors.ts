/**
 * Errors of the TPM client: a TPM that answered with a non-zero response code (`TpmError`), a
 * response that does not parse (`TpmProtocolError`), a transport that failed (`TpmTransportError`),
 * and the high-level failures of the quote flow.
 *
 * Response-code layout: TPM 2.0 Library Part 2 §6.6 (TPM_RC). Names are the spec's `TPM_RC_*`.
 */
import { ImakeepError } from '../errors.js';

/** Format-0 errors, `TPM_RC_VER1 (0x100) + n` (Part 2 §6.6.3). */
const VER1_NAMES: Readonly<Record<number, string>> = {
  0x000: 'INITIALIZE', 0x001: 'FAILURE', 0x003: 'SEQUENCE', 0x00b: 'PRIVATE', 0x019: 'HMAC',
  0x020: 'DISABLED', 0x021: 'EXCLUSIVE', 0x024: 'AUTH_TYPE', 0x025: 'AUTH_MISSING', 0x026: 'POLICY',
  0x027: 'PCR', 0x028: 'PCR_CHANGED', 0x02d: 'UPGRADE', 0x02e: 'TOO_MANY_CONTEXTS',
  0x02f: 'AUTH_UNAVAILABLE', 0x030: 'REBOOT', 0x031: 'UNBALANCED', 0x042: 'COMMAND_SIZE',
  0x043: 'COMMAND_CODE', 0x044: 'AUTHSIZE', 0x045: 'AUTH_CONTEXT', 0x046: 'NV_RANGE', 0x047: 'NV_SIZE',
  0x048: 'NV_LOCKED', 0x049: 'NV_AUTHORIZATION', 0x04a: 'NV_UNINITIALIZED', 0x04b: 'NV_SPACE',
  0x04c: 'NV_DEFINED', 0x050: 'BAD_CONTEXT', 0x051: 'CPHASH', 0x052: 'PARENT', 0x053: 'NEEDS_TEST',
  0x054: 'NO_RESULT', 0x055: 'SENSITIVE',
};

/** Format-1 errors, `TPM_RC_FMT1 (0x080) + n` (Part 2 §6.6.3). */
const FMT1_NAMES: Readonly<Record<number, string>> = {
  0x001: 'ASYMMETRIC', 0x002: 'ATTRIBUTES', 0x003: 'HASH', 0x004: 'VALUE', 0x005: 'HIERARCHY',
  0x007: 'KEY_SIZE', 0x008: 'MGF', 0x009: 'MODE', 0x00a: 'TYPE', 0x00b: 'HANDLE', 0x00c: 'KDF',
  0x00d: 'RANGE', 0x00e: 'AUTH_FAIL', 0x00f: 'NONCE', 0x010: 'PP', 0x012: 'SCHEME', 0x015: 'SIZE',
  0x016: 'SYMMETRIC', 0x017: 'TAG', 0x018: 'SELECTOR', 0x01a: 'INSUFFICIENT', 0x01b: 'SIGNATURE',
  0x01c: 'KEY', 0x01d: 'POLICY_FAIL', 0x01f: 'INTEGRITY', 0x020: 'TICKET', 0x021: 'RESERVED_BITS',
  0x022: 'BAD_AUTH', 0x023: 'EXPIRED', 0x024: 'POLICY_CC', 0x025: 'BINDING', 0x026: 'CURVE',
  0x027: 'ECC_POINT',
};

/** Warnings, `TPM_RC_WARN (0x900) + n` (Part 2 §6.6.3). */
const WARN_NAMES: Readonly<Record<number, string>> = {
  0x001: 'CONTEXT_GAP', 0x002: 'OBJECT_MEMORY', 0x003: 'SESSION_MEMORY', 0x004: 'MEMORY',
  0x005: 'SESSION_HANDLES', 0x006: 'OBJECT_HANDLES', 0x007: 'LOCALITY', 0x008: 'YIELDED',
  0x009: 'CANCELED', 0x00a: 'TESTING', 0x010: 'REFERENCE_H0', 0x011: 'REFERENCE_H1',
  0x012: 'REFERENCE_H2', 0x013: 'REFERENCE_H3', 0x014: 'REFERENCE_H4', 0x015: 'REFERENCE_H5',
  0x016: 'REFERENCE_H6', 0x018: 'REFERENCE_S0', 0x019: 'REFERENCE_S1', 0x01a: 'REFERENCE_S2',
  0x01b: 'REFERENCE_S3', 0x01c: 'REFERENCE_S4', 0x01d: 'REFERENCE_S5', 0x01e: 'REFERENCE_S6',
  0x020: 'NV_RATE', 0x021: 'LOCKOUT', 0x022: 'RETRY', 0x023: 'NV_UNAVAILABLE',
};

/** Warnings after which the same command may succeed unchanged (Part 1 §12, Part 2 §6.6.3). */
const RETRYABLE = new Set(['TPM_RC_RETRY', 'TPM_RC_YIELDED', 'TPM_RC_TESTING']);

/** A TPM response code split into its fields (Part 2 §6.6.2, Figures 26 and 27). */
export interface DecodedResponseCode {
  /** Spec name, e.g. `TPM_RC_FAILURE`, `TPM_RC_VALUE`; `TPM_RC_VENDOR_0x...` or `TPM_RC_0x...` if unknown. */
  readonly name: string;
  /** `fmt1` errors name the parameter, handle or session at fault. */
  readonly format: 0 | 1;
  /** True for warnings (format 0 with bit 11 set): the TPM state, not the command, is at fault. */
  readonly warning: boolean;
  /** 1-based parameter number for format-1 parameter errors. */
  readonly parameter?: number;
  /** 1-based handle number for format-1 handle errors. */
  readonly handle?: number;
  /** 1-based session number for format-1 session errors. */
  readonly session?: number;
}

const hex = (n: number): string => `0x${n.toString(16).padStart(3, '0')}`;

/** Decodes a TPM response code (non-zero) into its spec name and fields (Part 2 §6.6). */
export function decodeResponseCode(rc: number): DecodedResponseCode {
  if (rc & 0x080) {
    // Format 1: bits 0-5 error, bit 6 P (parameter), bits 8-11 N; without P, N < 8 is a handle
    // and N >= 8 a session (N - 8).
    const name = `TPM_RC_${FMT1_NAMES[rc & 0x3f] ?? hex(rc & 0xbf)}`;
    const n = (rc >> 8) & 0xf;
    if (rc & 0x040) return { name, format: 1, warning: false, parameter: n };
    if (n & 0x8) return { name, format: 1, warning: false, session: n & 0x7 };
    return n === 0 ? { name, format: 1, warning: false } : { name, format: 1, warning: false, handle: n };
  }
  if (!(rc & 0x100) || rc > 0xfff) return { name: `TPM_RC_${hex(rc)}`, format: 0, warning: false };
  if (rc & 0x400) return { name: `TPM_RC_VENDOR_${hex(rc)}`, format: 0, warning: false };
  const warning = (rc & 0x800) !== 0;
  const known = (warning ? WARN_NAMES : VER1_NAMES)[rc & 0x7f];
  return { name: `TPM_RC_${known ?? hex(rc)}`, format: 0, warning };
}

/**
 * The TPM answered a command with a non-zero response code. `code` is the spec name
 * (`TPM_RC_FAILURE`, `TPM_RC_RETRY`, ...), `rc` the raw number.
 */
export class TpmError extends ImakeepError {
  /** Raw response code. */
  readonly rc: number;
  /** Command that failed, e.g. `TPM2_Quote`. */
  readonly command: string;
  /** Decoded fields (format, parameter/handle/session number). */
  readonly decoded: DecodedResponseCode;
  /** True for TPM_RC_RETRY, TPM_RC_YIELDED and TPM_RC_TESTING: the same command may succeed later. */
  readonly retryable: boolean;

  constructor(rc: number, command: string) {
    const decoded = decodeResponseCode(rc);
    const at =
      decoded.parameter !== undefined ? ` (parameter ${decoded.parameter})`
      : decoded.handle !== undefined ? ` (handle ${decoded.handle})`
      : decoded.session !== undefined ? ` (session ${decoded.session})`
      : '';
    super(decoded.name, `${command} failed: ${decoded.name}${at}, rc 0x${rc.toString(16)}`);
    this.rc = rc;
    this.command = command;
    this.decoded = decoded;
    this.retryable = RETRYABLE.has(decoded.name);
  }
}

/**
 * Bytes that are not a well-formed TPM response (truncated, wrong tag, size field that disagrees
 * with the bytes, trailing garbage), or structure bytes that do not parse. Code `TPM_BAD_RESPONSE`.
 */
export class TpmProtocolError extends ImakeepError {
  /** Byte offset where parsing stopped, when known. */
  readonly offset: number | undefined;

  constructor(message: string, offset?: number) {
    super('TPM_BAD_RESPONSE', offset === undefined ? message : `${message} (at byte ${offset})`);
    this.offset = offset;
  }
}

/**
 * The transport to the TPM failed: cannot connect or open the device (`TPM_TRANSPORT_OPEN`), the
 * connection closed mid-response (`TPM_TRANSPORT_CLOSED`), no answer in time
 * (`TPM_TRANSPORT_TIMEOUT`), or an unknown address (`TPM_BAD_ADDRESS`).
 */
export class TpmTransportError extends ImakeepError {
  /** The TPM address, e.g. `swtpm:127.0.0.1:2321`. */
  readonly address: string;

  constructor(
    code: 'TPM_TRANSPORT_OPEN' | 'TPM_TRANSPORT_CLOSED' | 'TPM_TRANSPORT_TIMEOUT' | 'TPM_BAD_ADDRESS',
    address: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, `${address}: ${message}`, options);
    this.address = address;
  }
}

/** A requested PCR is not in an active bank: the TPM returned no value for it. Code `TPM_PCR_UNAVAILABLE`. */
export class TpmPcrUnavailableError extends ImakeepError {
  /** The PCRs the TPM did not return, as `bank:pcr`. */
  readonly missing: readonly string[];

  constructor(missing: readonly string[]) {
    super('TPM_PCR_UNAVAILABLE', `TPM returned no value for ${missing.join(', ')} (bank not active?)`);
    this.missing = missing;
  }
}

/**
 * The PCRs kept changing under a multi-step read: after `attempts` rounds the values read never
 * matched (a PCR_Read split over several calls saw the update counter move, or the values read
 * after a quote never hashed to its pcrDigest). Code `TPM_PCRS_UNSTABLE`.
 */
export class TpmPcrsUnstableError extends ImakeepError {
  /** How many rounds were made. */
  readonly attempts: number;

  constructor(what: string, attempts: number) {
    super('TPM_PCRS_UNSTABLE', `PCR values changed during ${what} in all ${attempts} attempts`);
    this.attempts = attempts;
  }
}
