/**
 * The checkpoint nonce chain is one rule, defined by the store (it defines checkpoints): the
 * collector quotes with it and the offline verifier checks with the very same function.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { sha256 } from '@noble/hashes/sha2.js';
import { concatBytes } from '../../src/ima/index.js';
import { chainedNonce } from '../../src/store/index.js';
import { chainedNonce as verifierNonce } from '../../src/verify/index.js';

describe('chainedNonce', () => {
  it('is SHA-256(label ‖ boot id) first, then SHA-256(label ‖ attest ‖ signature)', () => {
    const label = new TextEncoder().encode('imakeep/checkpoint-nonce/v1\0');
    const first = chainedNonce(undefined, 'b00t');
    assert.deepEqual(first, sha256(concatBytes([label, new TextEncoder().encode('b00t')])));
    const attest = Uint8Array.of(1, 2, 3);
    const signature = Uint8Array.of(4, 5);
    assert.deepEqual(chainedNonce({ attest, signature }, 'b00t'), sha256(concatBytes([label, attest, signature])));
    assert.equal(first.length, 32);
  });

  it('is the function the verifier checks chains with (one definition)', () => {
    assert.equal(verifierNonce, chainedNonce);
  });
});
