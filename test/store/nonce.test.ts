/**
 * The checkpoint nonce is one rule, defined by the store (it defines checkpoints): the collector
 * quotes with it and the offline verifier checks with the very same function. Golden vectors pin
 * the bytes: a change of the boot binding's encoding or of the nonce's layout fails here.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { sha256 } from '@noble/hashes/sha2.js';
import { concatBytes } from '../../src/ima/index.js';
import { bootBinding, chainedNonceV1, checkpointNonce, checkpointNonceV2, type BootInfo } from '../../src/store/index.js';
import { checkpointNonce as verifierNonce, checkpointNonceV2 as verifierNonceV2, chainedNonceV1 as verifierNonceV1 } from '../../src/verify/index.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const text = (s: string): Uint8Array => new TextEncoder().encode(s);

const BOOT: BootInfo = {
  kernelBootId: '6f1d9a52-0c3b-4e8e-9d7a-2b1c00000001',
  firstSeen: 1_763_800_000_000,
  resetCount: 3,
  // Built out of BANKS order on purpose: the binding orders them.
  bankModes: { sha256: 'native', sha1: 'padded' },
  endianness: 'le',
  template: 'ima-ng',
  templateHash: 'sha256',
};
const HEAD = new Uint8Array(32).fill(0xab);
const LINK = { attest: Uint8Array.of(1, 2, 3), signature: Uint8Array.of(4, 5) };

/**
 * Generated once from the values above and read against RFC 8949: `a8` map of 8, `68`
 * "deviceId", `65` "gw-17", ..., `1b 0000019aaaac2600` firstSeen as uint64, `03` resetCount.
 */
const GOLDEN = {
  binding:
    'a86864657669636549646567772d31376c6b65726e656c426f6f744964782436663164396135322d306333622d346538652d396437612d3262316330303030303030316966697273745365656e1b0000019aaaac26006a7265736574436f756e74036962616e6b4d6f646573a26473686131667061646465646673686132353666' +
    '6e61746976656a656e6469616e6e657373626c656874656d706c61746566696d612d6e676c74656d706c6174654861736866736861323536',
  /** Version 2, as the landed version 2 quoted (stores written then must keep verifying). */
  first: '865d0258af859eba0b9323884381b94a0954e5a266af34f133280d065b9da858',
  next: 'eed515fffc6c92de034a5c3064834900db4edd0bf0e29d32c0dcde03da3715ff',
  /** Version 3 (store boots 7 and 0x01020304), computed once outside this code (Python hashlib) from the layout. */
  v3First: 'b43e024bb9e507ae68233e47c16b812ae883250b7241cd15b706d0e5c7e6a05e',
  v3Next: 'b034b2d7cbacb7c2fd88cc6efffdf4f36e3a6a974a94f27f11243b904530c4f4',
};

describe('checkpoint nonce', () => {
  it('boot binding: every boot metadata field and the device id, in a fixed CBOR layout', () => {
    assert.equal(hex(bootBinding('gw-17', BOOT)), GOLDEN.binding);
    // Each field changes the binding.
    const variants: BootInfo[] = [
      { ...BOOT, kernelBootId: `${BOOT.kernelBootId.slice(0, -1)}2` },
      { ...BOOT, firstSeen: BOOT.firstSeen + 1 },
      { ...BOOT, resetCount: null },
      { ...BOOT, bankModes: { sha256: 'native', sha1: 'native' } },
      { ...BOOT, endianness: 'be' },
      { ...BOOT, template: 'ima-sig' },
      { ...BOOT, templateHash: 'sha512' },
    ];
    const all = new Set([hex(bootBinding('gw-17', BOOT)), hex(bootBinding(null, BOOT)), ...variants.map((v) => hex(bootBinding('gw-17', v)))]);
    assert.equal(all.size, variants.length + 2);
  });

  it('version 3: SHA-256(label ‖ H(binding) ‖ u32be(store boot) ‖ u64be(anchor) ‖ head ‖ previous attest ‖ signature)', () => {
    const label = text('imakeep/checkpoint-nonce/v3\0');
    const binding = sha256(bootBinding('gw-17', BOOT));
    const first = checkpointNonce({ deviceId: 'gw-17', storeBoot: 7, boot: BOOT, anchor: { count: 0, head: null }, previous: undefined });
    assert.deepEqual(first, sha256(concatBytes([label, binding, Uint8Array.of(0, 0, 0, 7), new Uint8Array(8), new Uint8Array(32)])));
    const next = checkpointNonce({ deviceId: 'gw-17', storeBoot: 0x01020304, boot: BOOT, anchor: { count: 0x1_0000_0102, head: HEAD }, previous: LINK });
    const count = Uint8Array.of(0, 0, 0, 1, 0, 0, 1, 2);
    assert.deepEqual(next, sha256(concatBytes([label, binding, Uint8Array.of(1, 2, 3, 4), count, HEAD, LINK.attest, LINK.signature])));
    assert.deepEqual([hex(first), hex(next)], [GOLDEN.v3First, GOLDEN.v3Next]);
    // The boot number changes the nonce.
    assert.notEqual(hex(checkpointNonce({ deviceId: 'gw-17', storeBoot: 8, boot: BOOT, anchor: { count: 0, head: null }, previous: undefined })), GOLDEN.v3First);
  });

  it('version 2 (stores written before version 3): the same without the store boot, label v2; the landed bytes', () => {
    const label = text('imakeep/checkpoint-nonce/v2\0');
    const binding = sha256(bootBinding('gw-17', BOOT));
    const first = checkpointNonceV2({ deviceId: 'gw-17', boot: BOOT, anchor: { count: 0, head: null }, previous: undefined });
    assert.deepEqual(first, sha256(concatBytes([label, binding, new Uint8Array(8), new Uint8Array(32)])));
    const next = checkpointNonceV2({ deviceId: 'gw-17', boot: BOOT, anchor: { count: 0x1_0000_0102, head: HEAD }, previous: LINK });
    const count = Uint8Array.of(0, 0, 0, 1, 0, 0, 1, 2);
    assert.deepEqual(next, sha256(concatBytes([label, binding, count, HEAD, LINK.attest, LINK.signature])));
    assert.equal(hex(first), GOLDEN.first);
    assert.equal(hex(next), GOLDEN.next);
    assert.equal(next.length, 32);
  });

  it('version 1 (stores written before version 2): SHA-256(label ‖ boot id), then SHA-256(label ‖ attest ‖ signature)', () => {
    const label = text('imakeep/checkpoint-nonce/v1\0');
    assert.deepEqual(chainedNonceV1(undefined, 'b00t'), sha256(concatBytes([label, text('b00t')])));
    assert.deepEqual(chainedNonceV1(LINK, 'b00t'), sha256(concatBytes([label, LINK.attest, LINK.signature])));
  });

  it('is the function the verifier checks chains with (one definition)', () => {
    assert.equal(verifierNonce, checkpointNonce);
    assert.equal(verifierNonceV2, checkpointNonceV2);
    assert.equal(verifierNonceV1, chainedNonceV1);
  });
});
