/**
 * Single-byte mutants of a bundle, and the check that `verify` (AK pinned) refuses each with a
 * `VERIFY_*` code: no field exempt, no mutant that passes with a report that "shows" it.
 */
import assert from 'node:assert/strict';
import type { KeyObject } from 'node:crypto';
import { mulberry32 } from '../../src/testing/index.js';
import { EvidenceVerifier, VerifyError } from '../../src/verify/index.js';

/** Mutants tried and the codes they were refused with. */
export interface MutationTally {
  readonly tried: number;
  readonly detected: number;
  readonly codes: Readonly<Record<string, number>>;
}

/** The byte offsets to mutate: every one, or a seeded sample of `sample`. */
export function mutationOffsets(length: number, sample: number | 'all', seed = 13): number[] {
  if (sample === 'all') return Array.from({ length }, (_, i) => i);
  const next = mulberry32(seed);
  return Array.from({ length: sample }, () => next() % length);
}

/**
 * Mutates byte `offset` of `bundle` (XOR with a seeded non-zero mask) for every offset given and
 * asserts `verify` refuses each with a `VERIFY_*` code. Returns the tally.
 */
export function assertEveryMutantFails(bundle: Uint8Array, ak: KeyObject, offsets: readonly number[], seed = 7): MutationTally {
  const next = mulberry32(seed);
  const codes: Record<string, number> = {};
  const passed: string[] = [];
  const mutant = Uint8Array.from(bundle);
  for (const offset of offsets) {
    const mask = 1 + (next() % 255);
    const original = mutant[offset] ?? 0;
    mutant[offset] = original ^ mask;
    try {
      new EvidenceVerifier({ trustedAk: ak }).verify(mutant);
      passed.push(`byte ${offset}: ${original.toString(16)} -> ${(original ^ mask).toString(16)}`);
    } catch (e) {
      if (!(e instanceof VerifyError)) throw e;
      codes[e.code] = (codes[e.code] ?? 0) + 1;
    } finally {
      mutant[offset] = original;
    }
  }
  assert.deepEqual(passed.slice(0, 20), [], `${passed.length} of ${offsets.length} mutants verified`);
  return { tried: offsets.length, detected: offsets.length - passed.length, codes };
}

/** Asserts that `verifier` refuses `bytes` with `code` at `check`; returns the error for its details. */
export function refusedWith(verifier: EvidenceVerifier, bytes: Uint8Array, code: string, check: string): VerifyError {
  let caught: VerifyError | undefined;
  assert.throws(
    () => verifier.verify(bytes),
    (e: unknown) => {
      if (!(e instanceof VerifyError && e.code === code && e.details.check === check)) return false;
      caught = e;
      return true;
    },
    `${code} ${check}`,
  );
  assert.ok(caught !== undefined);
  return caught;
}
