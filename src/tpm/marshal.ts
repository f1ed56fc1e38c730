/**
 * Big-endian marshalling of TPM structures (TPM 2.0 Library Part 1 §18: all integers are
 * big-endian, sized buffers `TPM2B_*` are `u16 size | bytes`).
 *
 * `TpmReader` is bounds-checked: every read past the end throws `TpmProtocolError`
 * (`TPM_BAD_RESPONSE`) with the offset, so a truncated or hostile response can never crash a caller
 * or allocate more than it holds.
 */
import { TpmProtocolError } from './errors.js';

/** Appends TPM wire-format values into a growing buffer. */
export class TpmWriter {
  private buf = new Uint8Array(256);
  private view = new DataView(this.buf.buffer);
  private len = 0;

  /**
   * Makes room for `n` bytes and returns their offset. Take the offset BEFORE touching
   * `buf`/`view`: growing replaces them.
   */
  private reserve(n: number): number {
    if (this.len + n > this.buf.length) {
      const next = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
      next.set(this.buf.subarray(0, this.len));
      this.buf = next;
      this.view = new DataView(next.buffer);
    }
    const at = this.len;
    this.len += n;
    return at;
  }

  /** UINT8. */
  u8(v: number): this {
    const at = this.reserve(1);
    this.view.setUint8(at, v);
    return this;
  }

  /** UINT16. */
  u16(v: number): this {
    const at = this.reserve(2);
    this.view.setUint16(at, v);
    return this;
  }

  /** UINT32. */
  u32(v: number): this {
    const at = this.reserve(4);
    this.view.setUint32(at, v >>> 0);
    return this;
  }

  /** UINT64. */
  u64(v: bigint): this {
    const at = this.reserve(8);
    this.view.setBigUint64(at, v);
    return this;
  }

  /** Raw bytes, no size prefix. */
  bytes(b: Uint8Array): this {
    const at = this.reserve(b.length);
    this.buf.set(b, at);
    return this;
  }

  /** A `TPM2B_*`: u16 size, then the bytes. */
  tpm2b(b: Uint8Array): this {
    if (b.length > 0xffff) throw new RangeError(`TPM2B of ${b.length} bytes exceeds 65535`);
    return this.u16(b.length).bytes(b);
  }

  /** Bytes written so far. */
  get length(): number {
    return this.len;
  }

  /** Overwrites a UINT16 already written at `offset` (size fields known only at the end). */
  patchU16(offset: number, v: number): this {
    this.view.setUint16(offset, v);
    return this;
  }

  /** Overwrites a UINT32 already written at `offset` (size fields known only at the end). */
  patchU32(offset: number, v: number): this {
    this.view.setUint32(offset, v >>> 0);
    return this;
  }

  /** A copy of the bytes written. */
  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

/** Reads TPM wire-format values; throws `TpmProtocolError` on any read past the end. */
export class TpmReader {
  private readonly view: DataView;
  private pos: number;
  private readonly end: number;

  /** Reads `bytes[start, end)`; offsets in errors are relative to `bytes`. */
  constructor(
    private readonly input: Uint8Array,
    start = 0,
    end = input.length,
  ) {
    this.view = new DataView(input.buffer, input.byteOffset, input.byteLength);
    this.pos = start;
    this.end = end;
  }

  private take(n: number, what: string): number {
    if (n > this.end - this.pos) {
      throw new TpmProtocolError(`truncated: ${what} needs ${n} bytes, ${this.end - this.pos} left`, this.pos);
    }
    const at = this.pos;
    this.pos += n;
    return at;
  }

  /** UINT8. */
  u8(what = 'UINT8'): number {
    return this.view.getUint8(this.take(1, what));
  }

  /** UINT16. */
  u16(what = 'UINT16'): number {
    return this.view.getUint16(this.take(2, what));
  }

  /** UINT32. */
  u32(what = 'UINT32'): number {
    return this.view.getUint32(this.take(4, what));
  }

  /** UINT64 as bigint (values above 2^53 are common: clock, firmwareVersion). */
  u64(what = 'UINT64'): bigint {
    return this.view.getBigUint64(this.take(8, what));
  }

  /** `n` raw bytes (a view into the input, not a copy). */
  bytes(n: number, what = 'bytes'): Uint8Array {
    const at = this.take(n, what);
    return this.input.subarray(at, at + n);
  }

  /** A `TPM2B_*`: u16 size, then that many bytes. */
  tpm2b(what = 'TPM2B'): Uint8Array {
    return this.bytes(this.u16(what), what);
  }

  /** A sub-reader over the next `n` bytes; this reader skips past them. */
  sub(n: number, what: string): TpmReader {
    const at = this.take(n, what);
    return new TpmReader(this.input, at, at + n);
  }

  /** The input bytes from `from` up to the current offset (a view): the raw form of what was just read. */
  since(from: number): Uint8Array {
    return this.input.subarray(from, this.pos);
  }

  /** Current offset in the input. */
  get offset(): number {
    return this.pos;
  }

  /** Bytes left. */
  get remaining(): number {
    return this.end - this.pos;
  }

  /** Throws unless every byte was consumed: trailing bytes mean the layout is not what we think. */
  expectEnd(what: string): void {
    if (this.pos !== this.end) {
      throw new TpmProtocolError(`${this.end - this.pos} unexpected trailing bytes after ${what}`, this.pos);
    }
  }
}
