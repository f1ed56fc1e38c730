/** Deterministic records and values shared by the store tests and bench/store.ts. */
import { concatBytes, type ImaRecord, type PcrReplayState } from '../../src/ima/index.js';
import type { BootInfo, Checkpoint } from '../../src/store/index.js';

function u32le(n: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n, true);
  return out;
}

/** Bytes 0..size-1 derived from `seed` (not a hash: only distinct per seed). */
export function filled(size: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: size }, (_, i) => (seed * 31 + i * 7) & 0xff);
}

/**
 * Record number `i`: an `ima-ng` record of a file `/usr/lib/file-<i>` (~120 B of template data,
 * like real lists, docs/ima-formats.md#sizes); every 50th is a violation (zero digest), every 97th an
 * `ima` template record, so chunks mix all shapes.
 */
export function makeRecord(i: number): ImaRecord {
  const path = new TextEncoder().encode(`/usr/lib/x86_64-linux-gnu/file-${i}.so\0`);
  if (i % 97 === 96) {
    const name = path.subarray(0, path.length - 1);
    return { pcr: 10, digest: filled(20, i), template: 'ima', data: concatBytes([filled(20, i + 1), u32le(name.length), name]) };
  }
  const dng = concatBytes([new TextEncoder().encode('sha256:\0'), filled(32, i)]);
  const data = concatBytes([u32le(dng.length), dng, u32le(path.length), path]);
  return { pcr: 10, digest: i % 50 === 49 ? new Uint8Array(20) : filled(20, i), template: 'ima-ng', data };
}

/** A replay state after `count` records, shaped like `PcrReplay.toState()` (values are placeholders). */
export function replayState(count: number): PcrReplayState {
  return {
    recordCount: count,
    banks: [
      { bank: 'sha1', mode: 'native', pcrs: [{ pcr: 10, value: filled(20, count) }] },
      { bank: 'sha256', mode: 'native', pcrs: [{ pcr: 10, value: filled(32, count) }] },
    ],
  };
}

/** Boot metadata of test boot `n`. */
export function bootInfo(n: number, firstSeen = 1_763_800_000_000 + n): BootInfo {
  return {
    kernelBootId: `0f6a1c7e-3b2d-4c55-9e1a-00000000000${n % 10}`,
    firstSeen,
    resetCount: n,
    bankModes: { sha256: 'native', sha1: 'native' },
    endianness: 'le',
    template: 'ima-ng',
    templateHash: 'sha256',
  };
}

/** A checkpoint covering `count` records (bytes are placeholders: the store does not verify quotes). */
export function checkpoint(count: number): Checkpoint {
  return {
    count,
    pcrs: [
      { bank: 'sha1', pcr: 10, value: filled(20, count) },
      { bank: 'sha256', pcr: 10, value: filled(32, count) },
    ],
    attest: filled(129, 1),
    signature: filled(70, 2),
    akName: filled(34, 3),
    nonce: filled(32, 4),
    pcrBlob: null,
  };
}
