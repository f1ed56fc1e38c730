/**
 * Appended signatures (ima-modsig) made by the kernel's own `scripts/sign-file` (Debian
 * linux-kbuild) and by `openssl cms`, with test keys made here: each signed file is split as the
 * kernel splits it (ima_modsig.c `ima_read_modsig`: PKCS#7, `struct module_signature`, the
 * marker), and its ima-modsig record built as ima_template_lib.c builds one (d-ng of the whole
 * file, n-ng, an empty sig, d-modsig, modsig). Judged against policies whose `digests` are empty,
 * so only the appended signature can pass a record: a valid one passes; a tampered one, an unknown
 * key, a d-modsig that is not what was signed, and bytes that are no PKCS#7 are flagged with their
 * reason codes.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, createPublicKey } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ImaRecord } from '../../src/ima/index.js';
import { emptyPolicy, failureLines, judgeAll } from './_policy.js';
import { digestNgField, makeRecord, nameNgField } from '../../src/testing/index.js';

const work = mkdtempSync(join(tmpdir(), 'imakeep-policy-modsig-'));
const MARKER = '~Module signature appended~\n';
/** `struct module_signature` (include/linux/module_signature.h): 8 bytes, then the PKCS#7 length (be32). */
const MODULE_SIGNATURE_SIZE = 12;

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { cwd: work, stdio: 'pipe', encoding: 'latin1' });
}

/** The kernel's sign-file, from any installed linux-kbuild (scripts/ensure.mjs installs one). */
function signFile(): string {
  const found = readdirSync('/usr/lib')
    .filter((d) => d.startsWith('linux-kbuild-'))
    .map((d) => `/usr/lib/${d}/scripts/sign-file`)
    .find((f) => existsSync(f));
  assert.ok(found !== undefined, 'scripts/sign-file not found: apt-get install linux-kbuild-6.1');
  return found;
}

interface Signer {
  readonly key: string;
  readonly cert: string;
  readonly spki: string;
}

/** A key and a self-signed certificate (with a subject key identifier, as openssl makes one by default). */
function makeSigner(name: string, algorithm: 'rsa' | 'prime256v1'): Signer {
  const key = join(work, `${name}.key`);
  const cert = join(work, `${name}.crt`);
  if (algorithm === 'rsa') run('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', key]);
  else run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', `ec_paramgen_curve:${algorithm}`, '-out', key]);
  run('openssl', ['req', '-x509', '-new', '-key', key, '-subj', `/CN=imakeep ${name}`, '-days', '2', '-out', cert]);
  const spki = createPublicKey(readFileSync(key)).export({ type: 'spki', format: 'der' }).toString('base64');
  return { key, cert, spki };
}

/** A signed file split as `ima_read_modsig` splits it. */
function splitSigned(signed: Uint8Array): { content: Uint8Array; pkcs7: Uint8Array } {
  const end = signed.length - MARKER.length;
  assert.equal(Buffer.from(signed.subarray(end)).toString('latin1'), MARKER);
  const length = Buffer.from(signed.buffer, signed.byteOffset + end - 4, 4).readUInt32BE(0);
  const sigStart = end - MODULE_SIGNATURE_SIZE - length;
  return { content: signed.subarray(0, sigStart), pkcs7: signed.subarray(sigStart, end - MODULE_SIGNATURE_SIZE) };
}

const sha256 = (data: Uint8Array): Uint8Array => new Uint8Array(createHash('sha256').update(data).digest());

/** The ima-modsig record of a signed file: d-ng over the whole file, d-modsig the digest the PKCS#7 signs. */
function modsigRecord(path: string, signed: Uint8Array, pkcs7: Uint8Array, dModsig: Uint8Array): ImaRecord {
  return makeRecord('ima-modsig', [digestNgField('sha256', sha256(signed)), nameNgField(path), new Uint8Array(0), digestNgField('sha256', dModsig), pkcs7]);
}

/** A file signed in place by sign-file (`-k`: the signer named by subject key identifier), and its record. */
function signedModule(name: string, signer: Signer, byKeyId: boolean): { rec: ImaRecord; path: string; content: Uint8Array; pkcs7: Uint8Array; signed: Uint8Array } {
  const file = join(work, name);
  writeFileSync(file, `module ${name}\n`.repeat(50));
  run(signFile(), [...(byKeyId ? ['-k'] : []), 'sha256', signer.key, signer.cert, file]);
  const signed = new Uint8Array(readFileSync(file));
  const { content, pkcs7 } = splitSigned(signed);
  const path = `/lib/modules/test/${name}.ko`;
  return { rec: modsigRecord(path, signed, pkcs7, sha256(content)), path, content, pkcs7, signed };
}

const keysOf = (...signers: Signer[]): string => JSON.stringify({ pubkeys: signers.map((s) => s.spki), keyids: [] });

describe('ima-modsig appended signatures made by sign-file', () => {
  let rsa: Signer;
  let ec: Signer;
  let stranger: Signer;

  before(() => {
    rsa = makeSigner('rsa', 'rsa');
    ec = makeSigner('p256', 'prime256v1');
    stranger = makeSigner('stranger', 'rsa');
  });

  it('valid RSA and ECDSA signatures pass with no digest listed, the signer named by key identifier or by issuer and serial', () => {
    const records = [signedModule('rsa-k', rsa, true).rec, signedModule('rsa-is', rsa, false).rec, signedModule('ec-k', ec, true).rec, signedModule('ec-is', ec, false).rec];
    const v = judgeAll(emptyPolicy({ 'verification-keys': keysOf(rsa, ec) }), records);
    assert.deepEqual(failureLines(v), []);
    assert.equal(v.summary.signaturesVerified, 4);
    // Without the keys, nothing vouches for them.
    assert.deepEqual(
      failureLines(judgeAll(emptyPolicy(), records)).map((l) => l.split(' ')[2]),
      Array(4).fill('modsig_unknown_key,not_in_policy'),
    );
  });

  it('a tampered signature, another key, a d-modsig that was not signed, no PKCS#7 are flagged', () => {
    const good = signedModule('tamper', rsa, true);
    const flipped = Uint8Array.from(good.pkcs7);
    flipped[flipped.length - 1] = (flipped[flipped.length - 1] ?? 0) ^ 1;
    const byIssuer = signedModule('tamper-is', rsa, false);
    const flippedIssuer = Uint8Array.from(byIssuer.pkcs7);
    flippedIssuer[flippedIssuer.length - 1] = (flippedIssuer[flippedIssuer.length - 1] ?? 0) ^ 1;
    const unknown = signedModule('stranger', stranger, true);
    const otherContent = new TextEncoder().encode('another module\n');
    const records = [
      modsigRecord(good.path, good.signed, flipped, sha256(good.content)),
      // The signature is good, the digest beside it is another file's.
      modsigRecord(good.path, good.signed, good.pkcs7, sha256(otherContent)),
      unknown.rec,
      modsigRecord(good.path, good.signed, good.pkcs7.subarray(0, good.pkcs7.length - 1), sha256(good.content)),
      modsigRecord(good.path, good.signed, new TextEncoder().encode('not a pkcs7'), sha256(good.content)),
      // Named by issuer and serial, with bare policy keys to try: none verifies, no known signer.
      modsigRecord(byIssuer.path, byIssuer.signed, flippedIssuer, sha256(byIssuer.content)),
      // d-modsig in another algorithm than the signer's.
      makeRecord('ima-modsig', [digestNgField('sha256', sha256(good.signed)), nameNgField(good.path), new Uint8Array(0), digestNgField('sha1', new Uint8Array(createHash('sha1').update(good.content).digest())), good.pkcs7]),
    ];
    const v = judgeAll(emptyPolicy({ 'verification-keys': keysOf(rsa) }), records);
    assert.deepEqual(failureLines(v), [
      `0 ${good.path} modsig_invalid,not_in_policy`,
      `1 ${good.path} modsig_invalid,not_in_policy`,
      `2 ${unknown.path} modsig_unknown_key,not_in_policy`,
      `3 ${good.path} modsig_malformed,not_in_policy`,
      `4 ${good.path} modsig_malformed,not_in_policy`,
      `5 ${byIssuer.path} modsig_unknown_key,not_in_policy`,
      `6 ${good.path} modsig_hash_mismatch,not_in_policy`,
    ]);
    // The file's digest listed in the policy still passes it, whatever its appended signature (as for sig).
    const listed = emptyPolicy({ 'verification-keys': keysOf(rsa), digests: { [good.path]: [Buffer.from(sha256(good.signed)).toString('hex')] } });
    assert.equal(judgeAll(listed, [records[0] as ImaRecord]).ok, true);
    // A record without an appended signature (both fields empty) is judged by its digest alone.
    const unsigned = makeRecord('ima-modsig', [digestNgField('sha256', sha256(otherContent)), nameNgField('/lib/modules/test/plain.ko'), new Uint8Array(0), new Uint8Array(0), new Uint8Array(0)]);
    assert.deepEqual(failureLines(judgeAll(emptyPolicy({ 'verification-keys': keysOf(rsa) }), [unsigned])), ['0 /lib/modules/test/plain.ko not_in_policy']);
  });

  it('a certificate measured onto a trusted keyring verifies signers named by its issuer and serial, and names a tampered one invalid', () => {
    const der = new Uint8Array(Buffer.from(readFileSync(rsa.cert, 'latin1').replace(/-----[^-]+-----|\s/g, ''), 'base64'));
    const keyRecord = makeRecord('ima-buf', [digestNgField('sha256', sha256(der)), nameNgField('.ima'), der]);
    const signed = signedModule('learned', rsa, false);
    const flipped = Uint8Array.from(signed.pkcs7);
    flipped[flipped.length - 1] = (flipped[flipped.length - 1] ?? 0) ^ 1;
    const trusting = emptyPolicy({ keyrings: { '.ima': [Buffer.from(sha256(der)).toString('hex')] } });
    const v = judgeAll(trusting, [keyRecord, signed.rec, modsigRecord(signed.path, signed.signed, flipped, sha256(signed.content))]);
    assert.deepEqual(failureLines(v), [`2 ${signed.path} modsig_invalid,not_in_policy`]);
    assert.equal(v.summary.keysLearned, 1);
    assert.equal(v.summary.signaturesVerified, 1);
  });

  it('with authenticated attributes (openssl cms), d-modsig is the digest of the attributes as a SET, and only that verifies', () => {
    const file = join(work, 'attrs.bin');
    const content = new TextEncoder().encode('module with signed attributes\n');
    writeFileSync(file, content);
    const p7 = join(work, 'attrs.p7');
    run('openssl', ['cms', '-sign', '-binary', '-nosmimecap', '-nocerts', '-md', 'sha256', '-signer', rsa.cert, '-inkey', rsa.key, '-in', file, '-outform', 'DER', '-out', p7]);
    const pkcs7 = new Uint8Array(readFileSync(p7));
    // The SignerInfo's [0] authenticatedAttributes (depth 5 in asn1parse), hashed with the SET tag (pkcs7_verify.c pkcs7_digest).
    const line = run('openssl', ['asn1parse', '-inform', 'DER', '-in', p7]).split('\n').find((l) => /d=5 +hl=(\d+) +l= *(\d+) cons: cont \[ 0 \]/.test(l));
    assert.ok(line !== undefined);
    const m = /^\s*(\d+):d=5 +hl=(\d+) +l= *(\d+)/.exec(line);
    const [offset, header, length] = [Number(m?.[1]), Number(m?.[2]), Number(m?.[3])];
    const attributes = Uint8Array.from(pkcs7.subarray(offset, offset + header + length));
    attributes[0] = 0x31;
    const signedFile = new Uint8Array([...content, ...pkcs7]);
    const policy = emptyPolicy({ 'verification-keys': keysOf(rsa) });
    assert.deepEqual(failureLines(judgeAll(policy, [modsigRecord('/lib/modules/test/attrs.ko', signedFile, pkcs7, sha256(attributes))])), []);
    // The file's own digest is what messageDigest holds, not what the kernel puts in d-modsig.
    assert.deepEqual(failureLines(judgeAll(policy, [modsigRecord('/lib/modules/test/attrs.ko', signedFile, pkcs7, sha256(content))])), ['0 /lib/modules/test/attrs.ko modsig_hash_mismatch,not_in_policy']);
  });
});
