/**
 * Offline verification against real quotes: ours (captured from swtpm) and tpm2_quote's. Every
 * kind of tampering is rejected with its own code.
 */
import assert from 'node:assert/strict';
import { createHash, createPublicKey } from 'node:crypto';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { CreatePrimary, Quote, type PcrValue, decodePcrBlob, encodePcrBlob, parseQuoteAttest, parseTpm2bPublic, publicKeyFromTpm2b, tpmName, verifyQuote } from '../../src/tpm/index.js';
import { exchange, hex, tpm2ToolsQuoteFile } from './_fixtures.js';
import { PcrRead, decodeResponse, refsOf } from '../../src/testing/index.js';

const nonce = new Uint8Array(32).fill(0x42);

/** A captured quote of ours with its AK and the PCR values read after it. */
function ourQuote(alg: 'ecc' | 'rsa') {
  const created = decodeResponse(CreatePrimary, exchange(`create-primary-${alg}`).response);
  const { attest, signature } = decodeResponse(Quote, exchange(`quote-${alg}`, 0x158).response);
  const read = decodeResponse(PcrRead, exchange(`quote-${alg}`, 0x17e).response);
  const pcrs: PcrValue[] = refsOf(read.selections).map((ref, i) => ({ ...ref, value: read.digests[i] ?? new Uint8Array() }));
  return { created, attest, signature, pcrs, akPublic: publicKeyFromTpm2b(created.outPublic) };
}

const flip = (b: Uint8Array, i: number): Uint8Array => {
  const c = b.slice();
  c[i] ^= 0x01;
  return c;
};

for (const alg of ['ecc', 'rsa'] as const) {
  describe(`our ${alg} quote`, () => {
    const q = ourQuote(alg);
    const input = { attest: q.attest, signature: q.signature, akPublic: q.akPublic, nonce, pcrs: q.pcrs };

    test('verifies and parses: nonce, counters (endorsement AK: not obfuscated), selection', () => {
      const parsed = verifyQuote(input);
      assert.equal(hex(parsed.extraData), hex(nonce));
      // swtpm's startup-clear is the first TPM Reset of a fresh state: resetCount 1 (as tpm2_quote shows).
      assert.equal(parsed.clockInfo.resetCount, 1);
      assert.equal(parsed.clockInfo.restartCount, 0);
      assert.equal(parsed.clockInfo.safe, true);
      assert.equal(typeof parsed.clockInfo.clock, 'bigint');
      assert.deepEqual(parsed.pcrSelections, [{ hashAlg: 0xb, pcrs: [10] }, { hashAlg: 4, pcrs: [10] }]);
      // The fixture extended PCR 10 with aa..aa (sha1) and bb..bb (sha256) from zero.
      const sha256 = createHash('sha256').update(Buffer.alloc(32)).update(Buffer.alloc(32, 0xbb)).digest('hex');
      assert.equal(hex(q.pcrs[0]?.value ?? new Uint8Array()), sha256);
    });

    test('the AK name is nameAlg ‖ SHA-256(TPMT_PUBLIC) and qualifies the signer under TPM_RH_ENDORSEMENT', () => {
      const pub = parseTpm2bPublic(q.created.outPublic);
      assert.equal(hex(tpmName(pub)), hex(q.created.name));
      const qualified = createHash('sha256').update(Buffer.from('4000000b', 'hex')).update(q.created.name).digest('hex');
      assert.equal(hex(parseQuoteAttest(q.attest).qualifiedSigner), `000b${qualified}`);
      assert.equal(pub.attributes, 0x00050472);
    });

    test('the AK exports as SPKI PEM and JWK with the TPM key material', () => {
      const pub = parseTpm2bPublic(q.created.outPublic);
      const jwk = q.akPublic.export({ format: 'jwk' });
      if (pub.type === 'ecc') {
        assert.equal(jwk.crv, 'P-256');
        assert.equal(jwk.x, Buffer.from(pub.x).toString('base64url'));
        assert.equal(jwk.y, Buffer.from(pub.y).toString('base64url'));
      } else {
        assert.equal(jwk.n, Buffer.from(pub.modulus).toString('base64url'));
        assert.equal(jwk.e, 'AQAB');
      }
      const pem = q.akPublic.export({ type: 'spki', format: 'pem' });
      assert.match(String(pem), /^-----BEGIN PUBLIC KEY-----/);
      assert.deepEqual(createPublicKey(pem).export({ format: 'jwk' }), jwk);
    });

    test('every changed attest byte: QUOTE_BAD_ATTEST or QUOTE_BAD_SIGNATURE', () => {
      for (let i = 0; i < q.attest.length; i++) {
        assert.throws(
          () => verifyQuote({ ...input, attest: flip(q.attest, i) }),
          (e: unknown) => e instanceof Error && 'code' in e && (i < 6 ? e.code === 'QUOTE_BAD_ATTEST' : /^QUOTE_BAD_(ATTEST|SIGNATURE)$/.test(String(e.code))),
          `byte ${i}`,
        );
      }
      assert.throws(() => verifyQuote({ ...input, attest: q.attest.subarray(0, 40) }), { code: 'QUOTE_BAD_ATTEST' });
    });

    test('a changed signature byte, a truncated signature, the wrong key: QUOTE_BAD_SIGNATURE', () => {
      assert.throws(() => verifyQuote({ ...input, signature: flip(q.signature, q.signature.length - 5) }), { code: 'QUOTE_BAD_SIGNATURE' });
      assert.throws(() => verifyQuote({ ...input, signature: q.signature.subarray(0, 20) }), { code: 'QUOTE_BAD_SIGNATURE' });
      const other = ourQuote(alg === 'ecc' ? 'rsa' : 'ecc');
      assert.throws(() => verifyQuote({ ...input, akPublic: other.akPublic }), { code: 'QUOTE_BAD_SIGNATURE' });
    });

    test('another nonce: QUOTE_NONCE_MISMATCH', () => {
      assert.throws(() => verifyQuote({ ...input, nonce: flip(nonce, 0) }), { code: 'QUOTE_NONCE_MISMATCH' });
    });

    test('a changed PCR value: QUOTE_PCR_DIGEST_MISMATCH', () => {
      const pcrs = q.pcrs.map((v, i) => (i === 1 ? { ...v, value: flip(v.value, 3) } : v));
      assert.throws(() => verifyQuote({ ...input, pcrs }), { code: 'QUOTE_PCR_DIGEST_MISMATCH' });
    });

    test('PCR values for other PCRs than quoted: QUOTE_PCR_SELECTION_MISMATCH', () => {
      const [first, second] = q.pcrs;
      assert.ok(first !== undefined && second !== undefined);
      for (const pcrs of [[first], [first, second, { ...first, pcr: 11 }], [first, { ...second, bank: 'sha384' as const }], [first, second, first]]) {
        assert.throws(() => verifyQuote({ ...input, pcrs }), { code: 'QUOTE_PCR_SELECTION_MISMATCH' });
      }
      // Order of the given values does not matter; the quote's order does.
      assert.doesNotThrow(() => verifyQuote({ ...input, pcrs: [second, first] }));
    });
  });
}

describe('tpm2_quote output (tpm2-tools 5.4)', () => {
  const attest = tpm2ToolsQuoteFile('attest.bin');
  const signature = tpm2ToolsQuoteFile('sig.bin');
  const blob = tpm2ToolsQuoteFile('pcrs.bin');
  const akPublic = createPublicKey(Buffer.from(tpm2ToolsQuoteFile('ak.pem')));

  test('its PCR file decodes, and re-encodes byte for byte', () => {
    const { values } = decodePcrBlob(blob);
    assert.deepEqual(values.map((v) => `${v.bank}:${v.pcr}:${v.value.length}`), ['sha256:10:32', 'sha256:11:32', 'sha1:10:20']);
    assert.equal(blob.length, 668);
    assert.equal(hex(encodePcrBlob(values)), hex(blob));
  });

  test('its quote verifies; another nonce does not', () => {
    const pcrs = decodePcrBlob(blob).values;
    const parsed = verifyQuote({ attest, signature, akPublic, nonce: Buffer.from('0011223344', 'hex'), pcrs });
    assert.equal(parsed.firmwareVersion, 0x2019102300163636n);
    assert.throws(() => verifyQuote({ attest, signature, akPublic, nonce: Buffer.from('0011223345', 'hex'), pcrs }), { code: 'QUOTE_NONCE_MISMATCH' });
  });
});

describe('tpm2-tools PCR file', () => {
  test('round-trips any PCR values, more than 8 digests spread over several TPML_DIGEST', () => {
    const banks = ['sha1', 'sha256', 'sha384', 'sha512'] as const;
    const sizes = { sha1: 20, sha256: 32, sha384: 48, sha512: 64 };
    fc.assert(
      fc.property(fc.uniqueArray(fc.tuple(fc.constantFrom(...banks), fc.integer({ min: 0, max: 23 })), { minLength: 1, maxLength: 30, selector: ([b, p]) => `${b}:${p}` }), fc.integer(), (refs, seed) => {
        const values = refs.map(([bank, pcr], i) => ({ bank, pcr, value: new Uint8Array(sizes[bank]).fill((seed + i) & 0xff) }));
        const blob = encodePcrBlob(values);
        assert.equal(blob.length, 132 + 4 + Math.ceil(values.length / 8) * 532);
        const decoded = decodePcrBlob(blob).values;
        const key = (v: PcrValue): string => `${v.bank}:${v.pcr}:${hex(v.value)}`;
        assert.deepEqual(decoded.map(key).sort(), values.map(key).sort());
      }),
    );
  });

  test('hostile files: TPM_BAD_PCR_BLOB with the offset', () => {
    const blob = tpm2ToolsQuoteFile('pcrs.bin');
    const mutate = (at: number, v: number, le32 = false): Uint8Array => {
      const c = blob.slice();
      if (le32) new DataView(c.buffer).setUint32(at, v, true);
      else c[at] = v;
      return c;
    };
    assert.throws(() => decodePcrBlob(blob.subarray(0, 100)), { code: 'TPM_BAD_PCR_BLOB', offset: 0 });
    assert.throws(() => decodePcrBlob(blob.subarray(0, blob.length - 1)), { code: 'TPM_BAD_PCR_BLOB', offset: 132 });
    assert.throws(() => decodePcrBlob(mutate(0, 17, true)), { code: 'TPM_BAD_PCR_BLOB', offset: 0 });
    assert.throws(() => decodePcrBlob(mutate(6, 5)), { code: 'TPM_BAD_PCR_BLOB', offset: 6 });
    assert.throws(() => decodePcrBlob(mutate(132, 2, true)), { code: 'TPM_BAD_PCR_BLOB' });
    assert.throws(() => decodePcrBlob(mutate(136, 9, true)), { code: 'TPM_BAD_PCR_BLOB', offset: 136 });
    assert.throws(() => decodePcrBlob(mutate(136, 2, true)), { code: 'TPM_BAD_PCR_BLOB' }); // 3 PCRs selected, 2 digests
    assert.throws(() => decodePcrBlob(mutate(140, 65)), { code: 'TPM_BAD_PCR_BLOB', offset: 140 });
    assert.throws(() => decodePcrBlob(mutate(140, 31)), { code: 'TPM_BAD_PCR_BLOB' }); // sha256 digest of 31 bytes
    assert.throws(() => decodePcrBlob(mutate(4, 0x99)), { code: 'TPM_BAD_PCR_BLOB', offset: 4 }); // unknown bank
  });
});
