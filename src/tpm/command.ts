/**
 * A TPM command as data: its code, its handle area, how to write its parameters and read its
 * response (as google/go-tpm `tpm2` does: each command a struct with its response type). `encodeCommand` and `decodeResponse` do the framing
 * every command shares (Part 1 §18.2-18.4; Part 3 §4-5): header, handles, the authorization area
 * with one empty-password session per authorized handle, and the response checks.
 */
import { TPM_RH, TPM_ST } from './constants.js';
import { TpmError, TpmProtocolError } from './errors.js';
import { TpmReader, TpmWriter } from './marshal.js';

/** One TPM command: request type `Req`, response type `Res`. */
export interface TpmCommand<Req, Res> {
  /** Spec name, e.g. `TPM2_Quote` (used in errors). */
  readonly name: string;
  /** TPM_CC. */
  readonly code: number;
  /** Handles of the handle area (Part 3 "handle" fields), in order. */
  handles(req: Req): readonly number[];
  /** How many of the leading handles need authorization (an empty-password session each, unless `sessions` says otherwise). */
  readonly authorized: number;
  /**
   * The session authorizing each of the `authorized` handles, in order; TPM_RS_PW (the
   * empty-password session) where absent. A policy session's authorization carries no HMAC and
   * no nonce here: it is unsalted and unbound, and its policy holds no PolicyAuthValue (Part 1 §19.7).
   */
  sessions?(req: Req): readonly (number | undefined)[];
  /** Number of handles in the response's handle area (CreatePrimary: 1). */
  readonly responseHandles: number;
  /** Writes the parameter area. */
  writeParams(w: TpmWriter, req: Req): void;
  /** Reads the parameter area; `handles` are those of the response handle area. */
  readParams(r: TpmReader, handles: readonly number[]): Res;
}

/** Header of every TPM response: tag, responseSize, responseCode (Part 1 §18.4). */
export const RESPONSE_HEADER_SIZE = 10;

/** Largest response accepted (the reference TPM's MAX_RESPONSE_SIZE is 4096; leave room). */
export const MAX_RESPONSE_SIZE = 0x10000;

/** Marshals a command: header, handles, authorization area (if any), parameters. */
export function encodeCommand<Req>(cmd: TpmCommand<Req, unknown>, req: Req): Uint8Array {
  const w = new TpmWriter();
  w.u16(cmd.authorized > 0 ? TPM_ST.SESSIONS : TPM_ST.NO_SESSIONS).u32(0).u32(cmd.code);
  for (const h of cmd.handles(req)) w.u32(h);
  if (cmd.authorized > 0) {
    // TPMS_AUTH_COMMAND with the password session and an empty password:
    // sessionHandle | nonce (empty) | attributes (0) | hmac (empty password). Part 1 §19.8.4.
    // Attributes 0: continueSession clear, so the TPM flushes a policy session after its use.
    const authSize = 9 * cmd.authorized;
    const sessions = cmd.sessions?.(req) ?? [];
    w.u32(authSize);
    for (let i = 0; i < cmd.authorized; i++) w.u32(sessions[i] ?? TPM_RH.PW).u16(0).u8(0).u16(0);
  }
  cmd.writeParams(w, req);
  return w.patchU32(2, w.length).finish();
}

/**
 * Checks the response header: throws `TpmProtocolError` when the bytes cannot be a TPM response
 * (shorter than the header, size field different from the byte count, unknown tag), and
 * `TpmError` when the TPM answered with a non-zero response code.
 */
export function checkResponseHeader(bytes: Uint8Array, command: string): { tag: number; reader: TpmReader } {
  if (bytes.length < RESPONSE_HEADER_SIZE) {
    throw new TpmProtocolError(`${command}: response of ${bytes.length} bytes is shorter than the 10-byte header`);
  }
  const r = new TpmReader(bytes);
  const tag = r.u16();
  const size = r.u32();
  const rc = r.u32();
  if (size !== bytes.length) {
    throw new TpmProtocolError(`${command}: responseSize field says ${size} bytes, response has ${bytes.length}`, 2);
  }
  if (tag !== TPM_ST.NO_SESSIONS && tag !== TPM_ST.SESSIONS) {
    throw new TpmProtocolError(`${command}: response tag 0x${tag.toString(16)} is not TPM_ST_(NO_)SESSIONS`, 0);
  }
  if (rc !== 0) throw new TpmError(rc, command);
  return { tag, reader: r };
}

/** Unmarshals a response to `cmd`, checking every size and that no byte is left over. */
export function decodeResponse<Res>(cmd: TpmCommand<unknown, Res>, bytes: Uint8Array): Res {
  const { tag, reader: r } = checkResponseHeader(bytes, cmd.name);
  const expected = cmd.authorized > 0 ? TPM_ST.SESSIONS : TPM_ST.NO_SESSIONS;
  if (tag !== expected) {
    throw new TpmProtocolError(`${cmd.name}: response tag 0x${tag.toString(16)}, expected 0x${expected.toString(16)}`, 0);
  }
  const handles = Array.from({ length: cmd.responseHandles }, () => r.u32('response handle'));
  if (cmd.authorized === 0) {
    const res = cmd.readParams(r, handles);
    r.expectEnd(cmd.name);
    return res;
  }
  // With sessions: parameterSize, parameters, then one TPMS_AUTH_RESPONSE per session
  // (nonce, attributes, hmac). Part 1 §18.4.
  const params = r.sub(r.u32('parameterSize'), 'parameters');
  const res = cmd.readParams(params, handles);
  params.expectEnd(cmd.name);
  for (let i = 0; i < cmd.authorized; i++) {
    r.tpm2b('auth nonce');
    r.u8('auth attributes');
    r.tpm2b('auth hmac');
  }
  r.expectEnd(`${cmd.name} authorization area`);
  return res;
}
