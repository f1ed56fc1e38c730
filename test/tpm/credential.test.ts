/**
 * EK templates, EK certificates in NV, policy sessions and credential activation against a real
 * swtpm manufactured by `swtpm_setup --create-ek-cert` (an L-1 RSA 2048 EK and an H-3 ECC P-384
 * EK, persisted at 0x81010001 and 0x81010016), with tpm2-tools as the oracle both ways.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { type SwtpmInstance, startSwtpm } from '../../hw/swtpm.js';
import { CredentialBlobError, EK_TEMPLATES, type EkTemplate, type EkTemplateName, TPM_ALG, Tpm, activateCredential, activationProof, decodeCredentialFile, ekTemplateOf, encodeCredentialFile, findEkCertificates, makeCredential, parseTpm2bPublic, publicKeyFromTpm2b, readEkChain, withEk } from '../../src/tpm/index.js';
import { GetCapability, TPM_CAP, createEk, ekPolicyA, ekPolicyB, nvBufferMax, readNv, splitDer } from '../../src/testing/index.js';

const run = promisify(execFile);

let swtpm: SwtpmInstance;
let tpm: Tpm;
let work: string;

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** Runs a tpm2-tools command against our swtpm, with our connection closed meanwhile. */
async function tools(cmd: string, args: string[], tcti = swtpm.tcti): Promise<string> {
  await tpm.close();
  const { stdout } = await run(cmd, args, { env: { ...process.env, TPM2TOOLS_TCTI: tcti }, cwd: work, encoding: 'latin1' });
  return stdout;
}

const template = (name: EkTemplateName): EkTemplate => {
  const t = EK_TEMPLATES.get(name);
  assert.ok(t, name);
  return t;
};

/** The persistent EK handle swtpm_setup gives each template's EK. */
const PERSISTENT: Partial<Record<EkTemplateName, string>> = { 'L-1': '0x81010001', 'H-3': '0x81010016' };

const AK_ATTRS = 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|sign';

before(async () => {
  swtpm = await startSwtpm({ ekCertificates: true });
  tpm = Tpm.open(swtpm.address);
  work = mkdtempSync(join(tmpdir(), 'imakeep-credential-test-'));
});

/** Loaded policy sessions (handle type 0x03), GetCapability TPM_CAP_HANDLES. */
async function policySessions(): Promise<number[]> {
  const res = await tpm.execute(GetCapability, { capability: TPM_CAP.HANDLES, property: 0x03000000, propertyCount: 64 });
  return res.capability === 'handles' ? res.handles.filter((h) => h >>> 24 === 0x03) : [];
}

after(async () => {
  try {
    // Whatever failed above, no object and no policy session stays loaded.
    assert.deepEqual(await tpm.transientHandles(), []);
    assert.deepEqual(await policySessions(), []);
  } finally {
    await tpm?.close();
    await swtpm?.stop();
    if (work !== undefined) rmSync(work, { recursive: true, force: true });
  }
});

describe('EK templates and policies', () => {
  test('PolicyA (SHA-256) and PolicyB (SHA-384) computed here are the EK Credential Profile values', () => {
    // Published in the profile's annex; also the authPolicy tpm2_createek and swtpm_setup write.
    assert.equal(hex(ekPolicyA(TPM_ALG.SHA256)), '837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa');
    assert.equal(hex(ekPolicyB(TPM_ALG.SHA384)), 'b26e7d28d11a50bc53d882bcf5fd3a1a074148bb35d3b4e4cb1c0ad9bde419cacb47ba09699646150f9fc000f3f80e12');
  });

  for (const name of ['L-1', 'H-3'] as const) {
    test(`${name}: the EK recreated from the template is the one swtpm_setup persisted`, async () => {
      const persisted = await tools('tpm2_readpublic', ['-c', PERSISTENT[name] ?? '', '-o', join(work, `${name}.pub`)]);
      assert.match(persisted, /name:/);
      const ours = await withEk(tpm, template(name), async (ek) => ek.public);
      assert.equal(hex(ours), hex(readFileSync(join(work, `${name}.pub`))));
      assert.equal(ekTemplateOf(parseTpm2bPublic(ours).bytes)?.name, name);
    });
  }

  test('L-2: the ECC P-256 EK equals tpm2_createek -G ecc', async () => {
    await tools('tpm2_createek', ['-G', 'ecc', '-c', join(work, 'ek-l2.ctx'), '-u', join(work, 'ek-l2.pub')]);
    await tools('tpm2_flushcontext', ['-t']);
    const ours = await withEk(tpm, template('L-2'), async (ek) => ek.public);
    assert.equal(hex(ours), hex(readFileSync(join(work, 'ek-l2.pub'))));
  });

  test('an AK public area is no EK template', async () => {
    const ak = await tpm.createAk();
    await tpm.flush(ak.handle);
    assert.equal(ekTemplateOf(parseTpm2bPublic(ak.public).bytes), undefined);
  });
});

describe('EK certificates in NV', () => {
  test('NV buffer max from GetCapability; chunked reads equal one read and tpm2_nvread', async () => {
    assert.equal(await nvBufferMax(tpm), 1024);
    const whole = await readNv(tpm, 0x01c00002);
    assert.equal(whole.data.length, whole.nvPublic.dataSize);
    const chunked = await readNv(tpm, 0x01c00002, 100);
    assert.equal(hex(chunked.data), hex(whole.data));
    await tools('tpm2_nvread', ['0x1c00002', '-C', 'o', '-o', join(work, 'rsa-ek.der')]);
    assert.equal(hex(whole.data), hex(readFileSync(join(work, 'rsa-ek.der'))));
  });

  test('the RSA (L-1) and ECC P-384 (H-3) certificates are found; each holds its EK; no chain in the TPM', async () => {
    const certs = await findEkCertificates(tpm);
    assert.deepEqual(certs.map((c) => c.template.name), ['L-1', 'H-3']);
    for (const { template: t, certificate } of certs) {
      const x509 = new X509Certificate(certificate);
      assert.equal(x509.issuer, 'CN=swtpm-localca');
      const ekPublic = await withEk(tpm, t, async (ek) => ek.public);
      assert.deepEqual(x509.publicKey.export({ format: 'jwk' }), publicKeyFromTpm2b(ekPublic).export({ format: 'jwk' }));
    }
    assert.deepEqual(await readEkChain(tpm), []);
  });
});

describe('credential files and DER', () => {
  test('the tpm2-tools credential file round-trips; anything else is TPM_BAD_CREDENTIAL_BLOB with the offset', () => {
    const challenge = { credentialBlob: new Uint8Array([1, 2, 3]), secret: new Uint8Array([4, 5]) };
    const file = encodeCredentialFile(challenge);
    assert.equal(hex(file), 'badcc0de00000001' + '0003010203' + '00020405');
    assert.deepEqual(decodeCredentialFile(file), challenge);
    const badMagic = Uint8Array.from(file);
    badMagic[0] = 0;
    assert.throws(() => decodeCredentialFile(badMagic), { code: 'TPM_BAD_CREDENTIAL_BLOB', offset: 0 });
    assert.throws(() => decodeCredentialFile(file.subarray(0, file.length - 1)), (e) => e instanceof CredentialBlobError && e.offset === 15);
    assert.throws(() => decodeCredentialFile(new Uint8Array([...file, 0])), { code: 'TPM_BAD_CREDENTIAL_BLOB' });
  });

  test('splitDer splits concatenated certificates and stops at padding', () => {
    const a = new Uint8Array([0x30, 0x02, 0xaa, 0xbb]);
    const b = new Uint8Array([0x30, 0x81, 0x01, 0xcc]);
    assert.deepEqual(splitDer(new Uint8Array([...a, ...b, 0xff, 0xff, 0x00])).map(hex), [hex(a), hex(b)]);
    assert.throws(() => splitDer(new Uint8Array([0x31, 0x00])), { code: 'TPM_BAD_RESPONSE' });
    assert.throws(() => splitDer(new Uint8Array([0x30, 0x05, 0x00])), { code: 'TPM_BAD_RESPONSE' });
  });
});

describe('credential activation', () => {
  const secret = new Uint8Array(Buffer.from('0123456789abcdefghijklmnopqrstuv'));

  for (const name of ['L-1', 'H-3'] as const) {
    test(`${name}: our MakeCredential, activated by imakeep and by tpm2_activatecredential`, async () => {
      const ek = await createEk(tpm, template(name));
      const ak = await tpm.createAk();
      try {
        const challenge = makeCredential(parseTpm2bPublic(ek.public), ak.name, secret);
        assert.equal(hex(await activateCredential(tpm, ek, ak.handle, challenge)), hex(secret));
        // The same blob for another Name does not activate: the outer HMAC covers it.
        const other = makeCredential(parseTpm2bPublic(ek.public), new Uint8Array([0, 0x0b, ...new Uint8Array(32)]), secret);
        await assert.rejects(activateCredential(tpm, ek, ak.handle, other), { code: 'TPM_RC_INTEGRITY' });
        writeFileSync(join(work, `${name}.blob`), encodeCredentialFile(challenge));
      } finally {
        await tpm.flush(ak.handle);
        await tpm.flush(ek.handle);
      }
      const ekHandle = PERSISTENT[name] ?? '';
      await tools('tpm2_createprimary', ['-C', 'e', '-g', 'sha256', '-G', 'ecc256:ecdsa-sha256:null', '-a', AK_ATTRS, '-c', join(work, 'ak.ctx')]);
      await tools('tpm2_flushcontext', ['-t']);
      await tools('tpm2_startauthsession', ['--policy-session', '-g', name === 'L-1' ? 'sha256' : 'sha384', '-S', join(work, 'session.ctx')]);
      await tools('tpm2_policysecret', ['-S', join(work, 'session.ctx'), '-c', 'e']);
      if (name === 'H-3') {
        // PolicyB = PolicyOR(PolicyA, PolicyC): tpm2_policyor takes the branch digests as files.
        const t = template(name);
        const [a, c] = t.policy[1]?.kind === 'or' ? t.policy[1].branches : [];
        writeFileSync(join(work, 'a.policy'), a ?? new Uint8Array());
        writeFileSync(join(work, 'c.policy'), c ?? new Uint8Array());
        await tools('tpm2_policyor', ['-S', join(work, 'session.ctx'), '-l', `sha384:${join(work, 'a.policy')},${join(work, 'c.policy')}`]);
      }
      await tools('tpm2_activatecredential', ['-c', join(work, 'ak.ctx'), '-C', ekHandle, '-i', join(work, `${name}.blob`),
        '-o', join(work, 'out.bin'), '-P', `session:${join(work, 'session.ctx')}`]);
      await tools('tpm2_flushcontext', ['-t']);
      await tools('tpm2_flushcontext', ['-s']);
      assert.equal(hex(readFileSync(join(work, 'out.bin'))), hex(secret));
    });

    test(`${name}: tpm2_makecredential's blob (offline, -T none) activated by imakeep`, async () => {
      const ek = await createEk(tpm, template(name));
      const ak = await tpm.createAk();
      try {
        writeFileSync(join(work, 'ek.pub'), ek.public);
        writeFileSync(join(work, 'secret.bin'), secret);
        // tpm2-tools 5.4 takes the Name as hex on the command line.
        await run('tpm2_makecredential', ['-T', 'none', '-u', join(work, 'ek.pub'), '-s', join(work, 'secret.bin'), '-n', hex(ak.name),
          '-o', join(work, 'theirs.blob')], { cwd: work });
        const challenge = decodeCredentialFile(readFileSync(join(work, 'theirs.blob')));
        assert.equal(hex(await activateCredential(tpm, ek, ak.handle, challenge)), hex(secret));
      } finally {
        await tpm.flush(ak.handle);
        await tpm.flush(ek.handle);
      }
    });
  }

  test('an AK of a second swtpm cannot activate a credential made for the first one\'s EK with that AK\'s Name', async () => {
    const second = await startSwtpm();
    const other = Tpm.open(second.address);
    try {
      const foreignAk = await other.createAk();
      await other.flush(foreignAk.handle);
      const ek = await createEk(tpm, template('L-1'));
      const ak = await tpm.createAk();
      try {
        // Different endorsement seeds: the second TPM's AK has another Name than ours.
        assert.notEqual(hex(foreignAk.name), hex(ak.name));
        const challenge = makeCredential(parseTpm2bPublic(ek.public), foreignAk.name, secret);
        await assert.rejects(activateCredential(tpm, ek, ak.handle, challenge), { code: 'TPM_RC_INTEGRITY' });
      } finally {
        await tpm.flush(ak.handle);
        await tpm.flush(ek.handle);
      }
      // And the second TPM, holding that AK, lacks the first one's EK: its own EK cannot decrypt the seed.
      const ek2 = await createEk(other, template('L-1'));
      const ak2 = await other.createAk();
      try {
        const challenge = makeCredential(parseTpm2bPublic(await withEk(tpm, template('L-1'), async (e) => e.public)), ak2.name, secret);
        // libtpms answers a seed it cannot decrypt with TPM_RC_FAILURE (OAEP padding check), and stays usable.
        await assert.rejects(activateCredential(other, ek2, ak2.handle, challenge), { name: 'TpmError', command: 'TPM2_ActivateCredential' });
      } finally {
        await other.flush(ak2.handle);
        await other.flush(ek2.handle);
      }
    } finally {
      await other.close();
      await second.stop();
    }
  });

  test('activation proof is Keylime\'s auth_tag: hex HMAC-SHA384 keyed by base64(secret), over the device id (openssl as oracle)', async () => {
    const uuid = 'd432fbb3-d2f1-4a97-9ef7-75bd81c00000';
    const key = Buffer.from(secret).toString('base64');
    writeFileSync(join(work, 'uuid.txt'), uuid);
    const { stdout } = await run('openssl', ['dgst', '-sha384', '-hmac', key, '-r', join(work, 'uuid.txt')]);
    assert.equal(activationProof(secret, uuid), stdout.split(' ')[0]);
  });
});
