/**
 * The enrollment exchange against real swtpms manufactured with EK certificates by swtpm_setup
 * and swtpm's local CA: the chain validates, and every way to cheat is refused with its code (the
 * certificate against another CA, an EK that is not the certificate's key, an AK with the wrong
 * attributes, an AK of another TPM, a wrong proof, a late answer).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { SWTPM_LOCAL_CA, type SwtpmInstance, startSwtpm } from '../../hw/swtpm.js';
import {
  type EnrollRequest,
  answerEnrollChallenge,
  createEnrollRequest,
  decodeEnrollAnswer,
  decodeEnrollChallenge,
  decodeEnrollPending,
  decodeEnrollRequest,
  decodeEnrollmentRecord,
  encodeEnrollAnswer,
  encodeEnrollChallenge,
  encodeEnrollPending,
  encodeEnrollRequest,
  encodeEnrollmentRecord,
  finishEnrollment,
  loadCaDirectory,
  makeEnrollChallenge,
  trustedAkOfEnrollment,
} from '../../src/enroll/index.js';
import { Tpm, TpmQuoter, parseTpm2bPublic, tpmName, verifyQuote } from '../../src/tpm/index.js';

const run = promisify(execFile);
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** An error check: the code, and each of `details` (the others the error may carry too). */
function coded(code: string, details: Record<string, unknown>): (e: unknown) => boolean {
  return (e) => {
    const err = e as { code?: unknown; details?: Record<string, unknown> };
    assert.equal(err.code, code, String(e));
    for (const [k, v] of Object.entries(details)) assert.deepEqual(err.details?.[k], v, `details.${k}`);
    return true;
  };
}

let first: SwtpmInstance;
let second: SwtpmInstance;
let tpm: Tpm;
let otherTpm: Tpm;
let work: string;
let anchors: X509Certificate[];

before(async () => {
  [first, second] = await Promise.all([startSwtpm({ ekCertificates: true }), startSwtpm({ ekCertificates: true })]);
  tpm = Tpm.open(first.address);
  otherTpm = Tpm.open(second.address);
  work = mkdtempSync(join(tmpdir(), 'imakeep-enroll-test-'));
  // The verifier's CA directory: swtpm's local CA (created by the first swtpm_setup on this machine).
  mkdirSync(join(work, 'ca'));
  for (const f of SWTPM_LOCAL_CA.certificates) copyFileSync(f, join(work, 'ca', f.split('/').at(-1) ?? 'ca.pem'));
  anchors = await loadCaDirectory(join(work, 'ca'));
});

after(async () => {
  try {
    assert.deepEqual(await tpm.transientHandles(), []);
    assert.deepEqual(await otherTpm.transientHandles(), []);
  } finally {
    await tpm?.close();
    await otherTpm?.close();
    await Promise.all([first?.stop(), second?.stop()]);
    if (work !== undefined) rmSync(work, { recursive: true, force: true });
  }
});

const device = { deviceId: 'd432fbb3-d2f1-4a97-9ef7-75bd81c00000', kernelBootId: '0b7e4c1d-0000-4000-8000-000000000001' };

describe('a full enrollment', () => {
  for (const ekTemplate of ['L-1', 'H-3'] as const) {
    test(`${ekTemplate}: request, challenge, answer, finish, every step through its file; quotes verify with the enrolled AK`, async (t) => {
      const started = process.hrtime.bigint();
      const request = decodeEnrollRequest(encodeEnrollRequest(await createEnrollRequest(tpm, { ...device, ekTemplate })));
      assert.equal(request.ekTemplate, ekTemplate);
      const { challenge, pending } = makeEnrollChallenge(request, { anchors });
      const answer = decodeEnrollAnswer(encodeEnrollAnswer(await answerEnrollChallenge(tpm, decodeEnrollChallenge(encodeEnrollChallenge(challenge)))));
      const record = decodeEnrollmentRecord(encodeEnrollmentRecord(finishEnrollment(decodeEnrollPending(encodeEnrollPending(pending)), answer)));
      t.diagnostic(`enrollment request→finish in process: ${Number(process.hrtime.bigint() - started) / 1e6} ms`);

      assert.equal(record.deviceId, device.deviceId);
      assert.equal(record.kernelBootId, device.kernelBootId);
      assert.equal(record.ekTemplate, ekTemplate);
      assert.equal(hex(record.ekName), hex(tpmName(parseTpm2bPublic(record.ekPublic))));
      // The path above the EK certificate, up to the first trusted CA: swtpm's issuing CA.
      assert.deepEqual(record.ekCertificatePath.map((der) => new X509Certificate(der).subject), ['CN=swtpm-localca']);
      assert.equal(new X509Certificate(record.ekCertificate).issuer, 'CN=swtpm-localca');

      // The AK enrolled is the one the device's quoter signs with.
      const quoter = new TpmQuoter(tpm);
      const nonce = new Uint8Array(32).fill(7);
      const quote = await quoter.quoteAndRead(nonce, [{ bank: 'sha256', pcr: 10 }]);
      assert.equal(hex(quote.akName), hex(record.akName));
      verifyQuote({ attest: quote.attest, signature: quote.signature, akPublic: trustedAkOfEnrollment(record), nonce, pcrs: quote.pcrs });
    });
  }

  test('the pending state is single-device: an answer for another challenge or device is ENROLL_UNKNOWN_CHALLENGE', async () => {
    const request = await createEnrollRequest(tpm, device);
    const { challenge, pending } = makeEnrollChallenge(request, { anchors });
    const answer = await answerEnrollChallenge(tpm, challenge);
    assert.throws(() => finishEnrollment(pending, { ...answer, challengeId: 'ff'.repeat(16) }), { code: 'ENROLL_UNKNOWN_CHALLENGE' });
    assert.throws(() => finishEnrollment(pending, { ...answer, deviceId: 'another' }), { code: 'ENROLL_UNKNOWN_CHALLENGE' });
    // A proof that is not the secret's: one hex digit changed.
    const wrong = `${answer.authTag[0] === '0' ? '1' : '0'}${answer.authTag.slice(1)}`;
    assert.throws(() => finishEnrollment(pending, { ...answer, authTag: wrong }), { code: 'ENROLL_ACTIVATION_FAILED' });
    // Answered after the challenge expired (30 days by default).
    const late = new Date(Date.parse(pending.expiresAt) + 1000);
    assert.throws(() => finishEnrollment(pending, answer, late), coded('ENROLL_CHALLENGE_EXPIRED', { expiresAt: pending.expiresAt }));
    assert.equal(finishEnrollment(pending, answer).deviceId, device.deviceId);
  });
});

describe('refused before any challenge', () => {
  let request: EnrollRequest;
  before(async () => {
    request = await createEnrollRequest(tpm, { ...device, ekTemplate: 'L-1' });
  });

  test('the same EK certificate against another CA: ENROLL_EK_CERT_CHAIN (no issuer)', async () => {
    const dir = join(work, 'other-ca');
    mkdirSync(dir);
    await run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'key.pem'),
      '-out', join(dir, 'ca.pem'), '-subj', '/CN=swtpm-localca', '-days', '30', '-addext', 'basicConstraints=critical,CA:TRUE',
      '-addext', 'keyUsage=critical,keyCertSign']);
    rmSync(join(dir, 'key.pem'));
    // Same subject as swtpm's issuing CA, another key: the signature check refuses it.
    const other = await loadCaDirectory(dir);
    assert.throws(() => makeEnrollChallenge(request, { anchors: other }), coded('ENROLL_EK_CERT_CHAIN', { reason: 'no-issuer', issuer: 'CN=swtpm-localca' }));
  });

  test('outside the certificates\' validity: ENROLL_EK_CERT_CHAIN (not-yet-valid)', () => {
    assert.throws(() => makeEnrollChallenge(request, { anchors, now: new Date('2001-01-01T00:00:00Z') }), coded('ENROLL_EK_CERT_CHAIN', { reason: 'not-yet-valid' }));
  });

  test('the intermediate CA held by the TPM completes a chain to the root alone', async () => {
    const rootOnly = anchors.filter((a) => a.subject === 'CN=swtpm-localca-rootca');
    assert.throws(() => makeEnrollChallenge(request, { anchors: rootOnly }), coded('ENROLL_EK_CERT_CHAIN', { reason: 'no-issuer' }));
    const issuer = anchors.find((a) => a.subject === 'CN=swtpm-localca');
    assert.ok(issuer);
    // Put the issuing CA where the EK Credential Profile puts a chain: NV 0x01C00100.
    writeFileSync(join(work, 'issuer.der'), issuer.raw);
    await tpm.close();
    const env = { ...process.env, TPM2TOOLS_TCTI: first.tcti };
    await run('tpm2_nvdefine', ['0x1c00100', '-C', 'o', '-s', String(issuer.raw.length + 16), '-a', 'ownerread|ownerwrite|authread|authwrite|no_da'], { env });
    await run('tpm2_nvwrite', ['0x1c00100', '-C', 'o', '-i', join(work, 'issuer.der')], { env });
    try {
      const withChain = await createEnrollRequest(tpm, { ...device, ekTemplate: 'L-1' });
      assert.deepEqual(withChain.ekChain.map((der) => new X509Certificate(der).subject), ['CN=swtpm-localca']);
      const { pending } = makeEnrollChallenge(withChain, { anchors: rootOnly });
      assert.deepEqual(pending.ekCertificatePath.map((der) => new X509Certificate(der).subject), ['CN=swtpm-localca', 'CN=swtpm-localca-rootca']);
    } finally {
      await tpm.close();
      await run('tpm2_nvundefine', ['0x1c00100', '-C', 'o'], { env });
    }
  });

  test('an EK that is not its certificate\'s key: ENROLL_EK_MISMATCH', async () => {
    const foreign = await createEnrollRequest(otherTpm, { ...device, ekTemplate: 'L-1' });
    // The second TPM's EK (same template, another seed) with the first TPM's certificate.
    assert.throws(() => makeEnrollChallenge({ ...request, ekPublic: foreign.ekPublic }, { anchors }), coded('ENROLL_EK_MISMATCH', { template: 'L-1' }));
    // The first TPM's ECC EK under the RSA EK's certificate.
    const ecc = await createEnrollRequest(tpm, { ...device, ekTemplate: 'H-3' });
    assert.throws(() => makeEnrollChallenge({ ...request, ekPublic: ecc.ekPublic }, { anchors }), { code: 'ENROLL_EK_MISMATCH' });
    // An AK public area in place of the EK: no EK template.
    assert.throws(() => makeEnrollChallenge({ ...request, ekPublic: request.akPublic }, { anchors }), coded('ENROLL_EK_MISMATCH', { actual: 'none' }));
  });

  test('an AK that is no restricted signing key: ENROLL_AK_ATTRIBUTES naming what is wrong', async () => {
    await tpm.close();
    const env = { ...process.env, TPM2TOOLS_TCTI: first.tcti };
    // An unrestricted signing key made by the TPM (tpm2-tools): it could sign a forged TPMS_ATTEST.
    await run('tpm2_createprimary', ['-C', 'e', '-g', 'sha256', '-G', 'ecc256:ecdsa-sha256:null', '-a', 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign',
      '-c', join(work, 'k.ctx')], { env });
    await run('tpm2_readpublic', ['-c', join(work, 'k.ctx'), '-o', join(work, 'k.pub')], { env });
    await run('tpm2_flushcontext', ['-t'], { env });
    const unrestricted = new Uint8Array(readFileSync(join(work, 'k.pub')));
    const name = tpmName(parseTpm2bPublic(unrestricted));
    assert.throws(() => makeEnrollChallenge({ ...request, akPublic: unrestricted, akName: name }, { anchors }), coded('ENROLL_AK_ATTRIBUTES', { missing: ['restricted'], forbidden: [], problems: [] }));
    // Our AK with decrypt set and fixedTPM cleared (TPMA_OBJECT at bytes 6..9 of the TPM2B_PUBLIC).
    const patched = Uint8Array.from(request.akPublic);
    const view = new DataView(patched.buffer);
    view.setUint32(6, (view.getUint32(6) | 0x20000) & ~0x2);
    assert.throws(() => makeEnrollChallenge({ ...request, akPublic: patched, akName: tpmName(parseTpm2bPublic(patched)) }, { anchors }), coded('ENROLL_AK_ATTRIBUTES', { missing: ['fixedTPM'], forbidden: ['decrypt'] }));
    // A Name that is not the public area's.
    assert.throws(() => makeEnrollChallenge({ ...request, akName: name }, { anchors }), coded('ENROLL_BAD_FILE', { field: 'ak_name' }));
  });
});

describe('an AK of another TPM', () => {
  test('cannot pass activation for the first TPM\'s EK', async () => {
    const request = await createEnrollRequest(tpm, { ...device, ekTemplate: 'L-1' });
    const foreign = await createEnrollRequest(otherTpm, { ...device, ekTemplate: 'L-1' });
    // The first TPM's EK and certificate, the second TPM's AK: the credential names the foreign AK.
    const { challenge } = makeEnrollChallenge({ ...request, akPublic: foreign.akPublic, akName: foreign.akName }, { anchors });
    // The first TPM does not hold that AK.
    await assert.rejects(answerEnrollChallenge(tpm, challenge), coded('ENROLL_AK_CHANGED', { expected: hex(foreign.akName), actual: hex(request.akName) }));
    // The second TPM holds the AK but not the EK the credential is encrypted to.
    await assert.rejects(answerEnrollChallenge(otherTpm, challenge), coded('ENROLL_ACTIVATION_FAILED', { challengeId: challenge.challengeId }));
  });
});

const CLI = new URL('../../src/cli.js', import.meta.url).pathname;

/** Runs `imakeep ARGS`; resolves with exit status and output. */
async function cli(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  await tpm.close();
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, ...args]);
    return { status: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { status: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

describe('imakeep enroll', () => {
  test('request, challenge, answer, finish as four commands; the pending state is used once', async (t) => {
    const f = (name: string): string => join(work, name);
    const state = f('state');
    const started = process.hrtime.bigint();
    const steps = [
      ['enroll', 'request', '--tpm', first.address, '--out', f('req.json'), '--device-id', device.deviceId, '--ek', 'H-3'],
      ['enroll', 'challenge', f('req.json'), '--ca', join(work, 'ca'), '--out', f('ch.json'), '--state', state],
      ['enroll', 'answer', f('ch.json'), '--tpm', first.address, '--out', f('ans.json')],
      ['enroll', 'finish', f('ans.json'), '--out', f('enrollment.json'), '--state', state],
    ];
    for (const step of steps) {
      const res = await cli(step);
      assert.equal(res.status, 0, res.stderr);
    }
    t.diagnostic(`imakeep enroll request→finish, four processes: ${Number(process.hrtime.bigint() - started) / 1e6} ms`);
    const record = decodeEnrollmentRecord(readFileSync(f('enrollment.json'), 'utf8'));
    assert.equal(record.deviceId, device.deviceId);
    assert.equal(record.ekTemplate, 'H-3');
    const { challengeId } = decodeEnrollChallenge(readFileSync(f('ch.json'), 'utf8'));
    assert.equal(record.challengeId, challengeId);
    const again = await cli(steps[3] ?? []);
    assert.equal(again.status, 1);
    assert.match(again.stderr, new RegExp(`^imakeep: ENROLL_UNKNOWN_CHALLENGE: no pending challenge ${challengeId}`));
  });

  test('a challenge refused by the verifier leaves no pending state and exits 1 with the code', async () => {
    const empty = join(work, 'no-ca');
    mkdirSync(empty);
    const res = await cli(['enroll', 'challenge', join(work, 'req.json'), '--ca', empty, '--out', join(work, 'ch2.json'), '--state', join(work, 'state2')]);
    assert.equal(res.status, 1);
    assert.match(res.stderr, /^imakeep: ENROLL_EK_CERT_CHAIN: no CA certificate/);
    const usage = await cli(['enroll', 'challenge', join(work, 'req.json'), '--out', join(work, 'ch2.json')]);
    assert.equal(usage.status, 2);
    assert.match(usage.stderr, /--ca is required/);
  });
});

describe('files', () => {
  test('a file of another type, version, or with a malformed field is ENROLL_BAD_FILE naming the field', async () => {
    const request = encodeEnrollRequest(await createEnrollRequest(tpm, device));
    assert.throws(() => decodeEnrollChallenge(request), coded('ENROLL_BAD_FILE', { field: 'type' }));
    assert.throws(() => decodeEnrollRequest(request.replace('"version": 1', '"version": 2')), coded('ENROLL_BAD_FILE', { field: 'version' }));
    const json = JSON.parse(request) as Record<string, unknown>;
    assert.throws(() => decodeEnrollRequest(JSON.stringify({ ...json, ek_tpm: 'not base64!' })), coded('ENROLL_BAD_FILE', { field: 'ek_tpm' }));
    assert.throws(() => decodeEnrollRequest(JSON.stringify({ ...json, ek_template: 'X-9' })), coded('ENROLL_BAD_FILE', { field: 'ek_template' }));
    assert.throws(() => decodeEnrollRequest(JSON.stringify({ ...json, ak_alg: 'dsa' })), coded('ENROLL_BAD_FILE', { field: 'ak_alg' }));
    assert.throws(() => decodeEnrollRequest('{'), { code: 'ENROLL_BAD_FILE' });
    const answer = { type: 'imakeep-enroll-answer', version: 1, challenge_id: 'ab'.repeat(16), device_id: 'b', auth_tag: 'zz' };
    assert.throws(() => decodeEnrollAnswer(JSON.stringify(answer)), coded('ENROLL_BAD_FILE', { field: 'auth_tag' }));
    // The challenge id names the verifier's pending file: nothing but hex gets through.
    assert.throws(() => decodeEnrollAnswer(JSON.stringify({ ...answer, challenge_id: '../../etc/passwd', auth_tag: '0'.repeat(96) })), coded('ENROLL_BAD_FILE', { field: 'challenge_id' }));
    // Keylime's names where the registrar has the field.
    assert.deepEqual(Object.keys(json).filter((k) => ['ek_tpm', 'ekcert', 'aik_tpm'].includes(k)), ['ek_tpm', 'ekcert', 'aik_tpm']);
  });
});
