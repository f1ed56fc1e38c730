/**
 * Signed files measured with ima-sig: files signed by `evmctl ima_sign` (ima-evm-utils) with test
 * keys made here with openssl (RSA 2048, ECDSA P-256/P-384/P-521), an ima-sig list built for them,
 * judged against a policy whose `verification-keys` hold the public keys and whose `digests` are
 * empty, so only the signatures can pass the records. A valid signature passes; a tampered one,
 * an unknown key, a malformed header and a hash algorithm other than the digest's are flagged with
 * their reason codes; a listed digest still passes a bad signature (Keylime falls back to it); a
 * key measured onto a trusted keyring verifies later records; v3 signatures over ima_file_id.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, createPrivateKey, createPublicKey, sign } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ImaRecord } from '../../src/ima/index.js';
import { addPoints, curveByName, multiply, nodePublicPoint, digestNgField, makeRecord, nameNgField, keyIdOf, parseImaSignature } from '../../src/testing/index.js';
import { emptyPolicy, failureLines, judgeAll } from './_policy.js';

const work = mkdtempSync(join(tmpdir(), 'imakeep-policy-sig-'));

function run(cmd: string, args: string[]): void {
  execFileSync(cmd, args, { cwd: work, stdio: 'pipe' });
}

/** A private key made by openssl, its PEM file and its public key as base64 DER SPKI. */
function makeKey(name: string, algorithm: 'rsa' | 'prime256v1' | 'secp384r1' | 'secp521r1'): { file: string; spki: string } {
  const file = join(work, `${name}.pem`);
  if (algorithm === 'rsa') run('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', file]);
  else run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', `ec_paramgen_curve:${algorithm}`, '-out', file]);
  const spki = createPublicKey(readFileSync(file)).export({ type: 'spki', format: 'der' }).toString('base64');
  return { file, spki };
}

/** A file signed with `evmctl ima_sign --sigfile`, and its ima-sig record. */
function signedRecord(name: string, content: string, keyFile: string, hashalgo: 'sha1' | 'sha256' | 'sha384' | 'sha512' = 'sha256', recordAlgo = hashalgo): { rec: ImaRecord; sig: Uint8Array; path: string } {
  const file = join(work, name);
  writeFileSync(file, content);
  run('evmctl', ['ima_sign', '--sigfile', '--hashalgo', hashalgo, '--key', keyFile, file]);
  const sig = new Uint8Array(readFileSync(`${file}.sig`));
  const digest = new Uint8Array(createHash(recordAlgo).update(content).digest());
  const path = `/usr/bin/${name}`;
  return { rec: makeRecord('ima-sig', [digestNgField(recordAlgo, digest), nameNgField(path), sig]), sig, path };
}

function withSig(rec: ImaRecord, path: string, algo: string, digest: Uint8Array, sig: Uint8Array): ImaRecord {
  return makeRecord(rec.template, [digestNgField(algo, digest), nameNgField(path), sig]);
}

describe('ima-sig signatures made by evmctl', () => {
  let rsa: { file: string; spki: string };
  let p256: { file: string; spki: string };
  let p384: { file: string; spki: string };
  let p521: { file: string; spki: string };
  let stranger: { file: string; spki: string };
  let keys: string;

  before(() => {
    rsa = makeKey('rsa', 'rsa');
    p256 = makeKey('p256', 'prime256v1');
    p384 = makeKey('p384', 'secp384r1');
    p521 = makeKey('p521', 'secp521r1');
    stranger = makeKey('stranger', 'rsa');
    keys = JSON.stringify({ pubkeys: [rsa.spki, p256.spki, p384.spki, p521.spki], keyids: [] });
  });

  it('the signature header carries the keyid evmctl computes: SHA-1 of the subjectPublicKey bits, last 4 bytes', () => {
    const { sig } = signedRecord('hdr', 'x', rsa.file);
    const parsed = parseImaSignature(sig);
    assert.ok(parsed !== null);
    assert.equal(parsed.type, 3);
    assert.equal(parsed.version, 2);
    assert.equal(parsed.hashAlgo, 4);
    assert.equal(parsed.keyId, keyIdOf(createPublicKey(readFileSync(rsa.file))));
  });

  it('valid RSA and ECDSA (P-256/sha256, P-384/sha384, P-521/sha512, RSA/sha1) signatures pass with no digest listed', () => {
    const records = [
      signedRecord('rsa-ok', 'hello rsa\n', rsa.file).rec,
      signedRecord('p256-ok', 'hello p256\n', p256.file).rec,
      signedRecord('p384-ok', 'hello p384\n', p384.file, 'sha384').rec,
      signedRecord('p521-ok', 'hello p521\n', p521.file, 'sha512').rec,
      signedRecord('rsa-sha1', 'hello sha1\n', rsa.file, 'sha1').rec,
    ];
    const v = judgeAll(emptyPolicy({ 'verification-keys': keys }), records);
    assert.deepEqual(failureLines(v), []);
    assert.equal(v.summary.signaturesVerified, 5);
    // Without the keys, the same records are judged by digest alone: none is listed.
    assert.deepEqual(failureLines(judgeAll(emptyPolicy(), records)).map((l) => l.split(' ')[2]), Array(5).fill('signature_unknown_key,not_in_policy'));
  });

  it('a tampered signature, an unknown key, a malformed header, another hash algorithm are flagged', () => {
    const good = signedRecord('t-rsa', 'tamper me\n', rsa.file);
    const ec = signedRecord('t-ec', 'tamper me too\n', p256.file);
    const digestOf = (content: string, algo = 'sha256'): Uint8Array => new Uint8Array(createHash(algo).update(content).digest());
    const flipped = Uint8Array.from(good.sig);
    flipped[flipped.length - 1] = (flipped[flipped.length - 1] ?? 0) ^ 1;
    const ecFlipped = Uint8Array.from(ec.sig);
    ecFlipped[ecFlipped.length - 3] = (ecFlipped[ecFlipped.length - 3] ?? 0) ^ 0x40;
    const unknown = signedRecord('t-stranger', 'not ours\n', stranger.file);
    const badHeader = good.sig.subarray(0, good.sig.length - 1);
    const sha1Signed = signedRecord('t-sha1', 'sha1 signed\n', rsa.file, 'sha1', 'sha256');
    const records = [
      withSig(good.rec, good.path, 'sha256', digestOf('tamper me\n'), flipped),
      withSig(ec.rec, ec.path, 'sha256', digestOf('tamper me too\n'), ecFlipped),
      // The right signature over another file's digest.
      withSig(good.rec, good.path, 'sha256', digestOf('other content\n'), good.sig),
      unknown.rec,
      withSig(good.rec, good.path, 'sha256', digestOf('tamper me\n'), badHeader),
      sha1Signed.rec,
    ];
    const v = judgeAll(emptyPolicy({ 'verification-keys': keys }), records);
    assert.deepEqual(failureLines(v), [
      `0 ${good.path} signature_invalid,not_in_policy`,
      `1 ${ec.path} signature_invalid,not_in_policy`,
      `2 ${good.path} signature_invalid,not_in_policy`,
      `3 ${unknown.path} signature_unknown_key,not_in_policy`,
      `4 ${good.path} signature_malformed,not_in_policy`,
      `5 ${sha1Signed.path} signature_hash_mismatch,not_in_policy`,
    ]);
    assert.deepEqual(v.summary.reasons, { not_in_policy: 6, signature_invalid: 3, signature_unknown_key: 1, signature_malformed: 1, signature_hash_mismatch: 1 });
    // Keylime falls back to the digest list: a listed digest passes whatever the signature.
    const listed = emptyPolicy({ 'verification-keys': keys, digests: { [good.path]: [Buffer.from(digestOf('tamper me\n')).toString('hex')] } });
    assert.equal(judgeAll(listed, [records[0] as ImaRecord]).ok, true);
    // An excluded path with a signature passes before the signature is checked.
    assert.equal(judgeAll(emptyPolicy({ 'verification-keys': keys, excludes: ['/usr/bin/t-'] }), records).ok, true);
  });

  it('a key measured onto a trusted keyring verifies the records after it', () => {
    const cert = join(work, 'ima-cert.der');
    run('openssl', ['req', '-x509', '-new', '-key', rsa.file, '-subj', '/CN=imakeep test IMA key', '-days', '2', '-outform', 'DER', '-out', cert]);
    const der = new Uint8Array(readFileSync(cert));
    const certDigest = new Uint8Array(createHash('sha256').update(der).digest());
    const keyRecord = makeRecord('ima-buf', [digestNgField('sha256', certDigest), nameNgField('.ima'), der]);
    const signed = signedRecord('learned', 'signed by the .ima key\n', rsa.file).rec;
    const trusting = emptyPolicy({ keyrings: { '.ima': [Buffer.from(certDigest).toString('hex')] } });
    const v = judgeAll(trusting, [keyRecord, signed]);
    assert.deepEqual(failureLines(v), []);
    assert.equal(v.summary.keysLearned, 1);
    assert.equal(v.summary.signaturesVerified, 1);
    // The signed record before the key, or the key not trusted: the signature has no key.
    assert.deepEqual(failureLines(judgeAll(trusting, [signed, keyRecord])), [`0 /usr/bin/learned signature_unknown_key,not_in_policy`]);
    assert.deepEqual(failureLines(judgeAll(emptyPolicy(), [keyRecord, signed])), ['0 .ima keyring_not_allowed', `1 /usr/bin/learned signature_unknown_key,not_in_policy`]);
  });

  it('v3 signatures: RSA and ECDSA over H(ima_file_id) = H(type | hash_algo | digest)', () => {
    const content = 'verity or not\n';
    const digest = new Uint8Array(createHash('sha256').update(content).digest());
    const v3 = (keyFile: string, type: number): Uint8Array => {
      const key = createPrivateKey(readFileSync(keyFile));
      const fileId = Uint8Array.from([type, 4, ...digest]);
      const s = sign('sha256', fileId, key);
      const keyId = keyIdOf(createPublicKey(key));
      return Uint8Array.from([type, 3, 4, keyId >>> 24, (keyId >>> 16) & 0xff, (keyId >>> 8) & 0xff, keyId & 0xff, s.length >> 8, s.length & 0xff, ...s]);
    };
    const rec = (sig: Uint8Array): ImaRecord => makeRecord('ima-sig', [digestNgField('sha256', digest), nameNgField('/usr/bin/v3'), sig]);
    const policy = emptyPolicy({ 'verification-keys': keys });
    assert.deepEqual(failureLines(judgeAll(policy, [rec(v3(rsa.file, 3)), rec(v3(p256.file, 3)), rec(v3(rsa.file, 6))])), []);
    // A v3 signature made as v2 (over the digest itself) does not verify as v3.
    const asV2 = signedRecord('v3-as-v2', content, rsa.file).sig;
    const relabelled = Uint8Array.from(asV2);
    relabelled[1] = 3;
    assert.deepEqual(failureLines(judgeAll(policy, [rec(relabelled)])), ['0 /usr/bin/v3 signature_invalid,not_in_policy']);
  });
});

describe('ECDSA curve constants', () => {
  for (const name of ['prime256v1', 'secp384r1', 'secp521r1']) {
    it(`${name}: n·G is the point at infinity; 2G and 3G are node's public keys of 2 and 3`, () => {
      const curve = curveByName(name);
      assert.ok(curve !== undefined);
      assert.equal(multiply(curve, curve.n, curve.g), null);
      assert.deepEqual(addPoints(curve, curve.g, curve.g), nodePublicPoint(name, 2));
      assert.deepEqual(multiply(curve, 3n, curve.g), nodePublicPoint(name, 3));
    });
  }
});
