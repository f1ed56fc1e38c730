/**
 * The client against a real swtpm (one private instance for this file), with tpm2-tools as the
 * oracle. swtpm serves one data connection at a time, so the transport is closed before every
 * tpm2-tools call.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, createPublicKey } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { type SwtpmInstance, startSwtpm } from '../../hw/swtpm.js';
import {
  type PcrValue,
  Tpm,
  TpmDeviceTransport,
  TpmError,
  decodePcrBlob,
  encodePcrBlob,
  openTpmTransport,
  publicKeyFromTpm2b,
  verifyQuote,
} from '../../src/tpm/index.js';
import { hex } from './_fixtures.js';

const run = promisify(execFile);
const CLI = new URL('../../src/cli.js', import.meta.url).pathname;

let swtpm: SwtpmInstance;
let tpm: Tpm;
let work: string;

/** Runs a tpm2-tools command against our swtpm, with our connection closed meanwhile. */
async function tools(cmd: string, args: string[]): Promise<string> {
  await tpm.close();
  const { stdout } = await run(cmd, args, { env: { ...process.env, TPM2TOOLS_TCTI: swtpm.tcti }, cwd: work });
  return stdout;
}

/** Runs `imakeep tpm ...`; resolves with exit status and output. */
async function cli(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  await tpm.close();
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI, 'tpm', ...args]);
    return { status: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { status: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

/** Parses `tpm2_pcrread` YAML output into `bank:pcr -> hex`. */
function parsePcrreadYaml(yaml: string): Map<string, string> {
  const out = new Map<string, string>();
  let bank = '';
  for (const line of yaml.split('\n')) {
    const b = /^\s+(sha\d+):\s*$/.exec(line);
    if (b?.[1] !== undefined) bank = b[1];
    const v = /^\s+(\d+)\s*:\s*0x([0-9A-Fa-f]+)/.exec(line);
    if (v?.[1] !== undefined && v[2] !== undefined) out.set(`${bank}:${v[1]}`, v[2].toLowerCase());
  }
  return out;
}

const H = (alg: string, ...parts: Uint8Array[]): Uint8Array => {
  const h = createHash(alg);
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
};

before(async () => {
  swtpm = await startSwtpm();
  tpm = Tpm.open(swtpm.address);
  work = mkdtempSync(join(tmpdir(), 'imakeep-tpm-test-'));
});

after(async () => {
  try {
    // Whatever ran above, nothing may stay loaded in swtpm's 3 transient slots.
    assert.deepEqual(await tpm.transientHandles(), []);
  } finally {
    await tpm?.close();
    await swtpm?.stop();
    if (work !== undefined) rmSync(work, { recursive: true, force: true });
  }
});

describe('swtpm harness', () => {
  test('stop kills the process by pid and removes the state dir; stop is idempotent', async () => {
    const other = await startSwtpm();
    assert.match(other.address, /^swtpm:127\.0\.0\.1:\d+$/);
    assert.notEqual(other.port, other.ctrlPort);
    assert.equal(existsSync(other.stateDir), true);
    process.kill(other.pid, 0); // alive
    await Promise.all([other.stop(), other.stop()]);
    await other.stop();
    assert.throws(() => process.kill(other.pid, 0), { code: 'ESRCH' });
    assert.equal(existsSync(other.stateDir), false);
    // Nothing listens there any more: a typed transport error, not a hang.
    const dead = Tpm.open(other.address);
    await assert.rejects(dead.getRandom(8), { code: 'TPM_TRANSPORT_OPEN' });
    await dead.close();
  });

  test('banks option runs swtpm_setup --pcr-banks', async () => {
    const other = await startSwtpm({ banks: ['sha1', 'sha256'] });
    const t = Tpm.open(other.address);
    try {
      assert.deepEqual(await t.getActiveBanks(), ['sha1', 'sha256']);
      await assert.rejects(t.pcrRead([{ bank: 'sha384', pcr: 10 }]), { code: 'TPM_PCR_UNAVAILABLE', missing: ['sha384:10'] });
    } finally {
      await t.close();
      await other.stop();
    }
  });
});

describe('PCRs', () => {
  test('a fresh state has all four banks', async () => {
    assert.deepEqual(await tpm.getActiveBanks(), ['sha1', 'sha256', 'sha384', 'sha512']);
  });

  test('extend then read: new = H(old ‖ digest) in each bank given', async () => {
    const refs = [{ bank: 'sha1', pcr: 10 }, { bank: 'sha256', pcr: 10 }, { bank: 'sha384', pcr: 10 }] as const;
    const before = await tpm.pcrRead(refs);
    const digests = { sha1: H('sha1', Buffer.from('a')), sha256: H('sha256', Buffer.from('b')), sha384: H('sha384', Buffer.from('c')) };
    await tpm.pcrExtend(10, digests);
    const afterRead = await tpm.pcrRead(refs);
    before.forEach((old, i) => {
      assert.equal(hex(afterRead[i]?.value ?? new Uint8Array()), hex(H(old.bank, old.value, digests[refs[i]?.bank ?? 'sha1'])));
    });
    await assert.rejects(tpm.pcrExtend(10, { sha256: new Uint8Array(20) }), RangeError);
  });

  test('PCR_Read of 48 PCRs (split over several commands) equals tpm2_pcrread', async () => {
    await tpm.pcrExtend(16, { sha1: new Uint8Array(20).fill(7), sha256: new Uint8Array(32).fill(7) });
    const refs = (['sha1', 'sha256'] as const).flatMap((bank) => Array.from({ length: 24 }, (_, pcr) => ({ bank, pcr })));
    const ours = await tpm.pcrRead(refs);
    assert.equal(ours.length, 48);
    const theirs = parsePcrreadYaml(await tools('tpm2_pcrread', ['sha1:all+sha256:all']));
    assert.equal(theirs.size, 48);
    for (const v of ours) assert.equal(hex(v.value), theirs.get(`${v.bank}:${v.pcr}`), `${v.bank}:${v.pcr}`);
    assert.notEqual(hex(ours[16]?.value ?? new Uint8Array()), '00'.repeat(20));
  });

  test('concurrent callers are queued: one command in flight, all answered', async () => {
    const ref = [{ bank: 'sha256', pcr: 10 }] as const;
    const results = await Promise.all([
      ...Array.from({ length: 20 }, () => tpm.pcrRead(ref)),
      ...Array.from({ length: 5 }, () => tpm.getRandom(16)),
    ]);
    const values = new Set(results.slice(0, 20).map((r) => hex(Array.isArray(r) ? (r[0]?.value ?? new Uint8Array()) : new Uint8Array())));
    assert.equal(values.size, 1);
    for (const r of results.slice(20)) assert.equal(r instanceof Uint8Array && r.length, 16);
  });
});

describe('quotes', () => {
  for (const alg of ['ecc', 'rsa'] as const) {
    test(`our ${alg} quote passes tpm2_checkquote and our verifier`, async () => {
      const nonce = await tpm.getRandom(32);
      const pcrs = [{ bank: 'sha256', pcr: 10 }, { bank: 'sha1', pcr: 10 }, { bank: 'sha256', pcr: 16 }] as const;
      const { q, akPublic } = await tpm.withAk({ alg }, async (ak) => ({ q: await tpm.quote({ nonce, pcrs, ak }), akPublic: ak.public }));
      assert.equal(q.attempts, 1);
      const key = publicKeyFromTpm2b(akPublic);
      assert.equal(hex(verifyQuote({ attest: q.attest, signature: q.signature, akPublic: key, nonce, pcrs: q.pcrs }).extraData), hex(nonce));
      writeFileSync(join(work, `${alg}.attest`), q.attest);
      writeFileSync(join(work, `${alg}.sig`), q.signature);
      writeFileSync(join(work, `${alg}.pcrs`), encodePcrBlob(q.pcrs));
      writeFileSync(join(work, `${alg}.pem`), key.export({ type: 'spki', format: 'pem' }));
      const args = ['-u', `${alg}.pem`, '-m', `${alg}.attest`, '-s', `${alg}.sig`, '-f', `${alg}.pcrs`, '-g', 'sha256'];
      await tools('tpm2_checkquote', [...args, '-q', hex(nonce)]);
      const wrongNonce = hex(nonce).replace(/^./, (c) => (c === '0' ? '1' : '0'));
      await assert.rejects(tools('tpm2_checkquote', [...args, '-q', wrongNonce]));
    });

    test(`tpm2_quote's ${alg} quote passes our verifier (library and CLI with tpm2-tools file names)`, async () => {
      const dir = mkdtempSync(join(work, `tools-${alg}-`));
      const scheme = alg === 'ecc' ? 'ecc256:ecdsa-sha256:null' : 'rsa2048:rsassa-sha256:null';
      const attrs = 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign|noda';
      await tools('tpm2_createprimary', ['-C', 'e', '-g', 'sha256', '-G', scheme, '-a', attrs, '-c', join(dir, 'ak.ctx')]);
      await tools('tpm2_flushcontext', ['-t']);
      await tools('tpm2_readpublic', ['-c', join(dir, 'ak.ctx'), '-f', 'pem', '-o', join(dir, 'ak.pem')]);
      await tools('tpm2_flushcontext', ['-t']);
      const nonce = 'c0ffee0123456789';
      await tools('tpm2_quote', ['-c', join(dir, 'ak.ctx'), '-l', 'sha256:10,16+sha1:10', '-q', nonce,
        '-m', join(dir, 'quote.msg'), '-s', join(dir, 'quote.sig'), '-o', join(dir, 'quote.pcrs'), '-g', 'sha256']);
      await tools('tpm2_flushcontext', ['-t']);
      const read = (n: string): Uint8Array => new Uint8Array(readFileSync(join(dir, n)));
      const pcrs: readonly PcrValue[] = decodePcrBlob(read('quote.pcrs')).values;
      assert.deepEqual(pcrs.map((v) => `${v.bank}:${v.pcr}`), ['sha256:10', 'sha256:16', 'sha1:10']);
      assert.deepEqual(pcrs.map((v) => hex(v.value)), (await tpm.pcrRead(pcrs)).map((v) => hex(v.value)));
      const akPublic = createPublicKey(Buffer.from(read('ak.pem')));
      verifyQuote({ attest: read('quote.msg'), signature: read('quote.sig'), akPublic, nonce: Buffer.from(nonce, 'hex'), pcrs });
      const ok = await cli(['verify', dir, '--nonce', nonce, '--json']);
      assert.equal(ok.status, 0, ok.stderr);
      assert.equal(JSON.parse(ok.stdout).ok, true);
      const bad = await cli(['verify', dir, '--nonce', '00']);
      assert.equal(bad.status, 1);
      assert.match(bad.stderr, /^imakeep: QUOTE_NONCE_MISMATCH: /);
    });
  }

  test('imakeep tpm quote writes a directory tpm2_checkquote accepts; pcrread prints bank:pcr hex', async () => {
    const out = join(work, 'cli-quote');
    const nonce = 'ab'.repeat(20);
    const q = await cli(['quote', '--tpm', swtpm.address, '--nonce', nonce, '--pcrs', 'sha256:10,sha1:10', '--out', out, '--ak', 'rsa']);
    assert.equal(q.status, 0, q.stderr);
    await tools('tpm2_checkquote', ['-u', join(out, 'ak.pem'), '-m', join(out, 'attest.bin'), '-s', join(out, 'sig.bin'),
      '-f', join(out, 'pcrs.bin'), '-g', 'sha256', '-q', nonce]);
    const v = await cli(['verify', out, '--nonce', nonce]);
    assert.equal(v.status, 0, v.stderr);
    const pcrread = await cli(['pcrread', '--tpm', swtpm.address, '--pcrs', 'sha256:10,sha1:10']);
    const expected = (await tpm.pcrRead([{ bank: 'sha256', pcr: 10 }, { bank: 'sha1', pcr: 10 }])).map((x) => `${x.bank}:${x.pcr} ${hex(x.value)}\n`).join('');
    assert.equal(pcrread.stdout, expected);
    assert.equal(q.stdout, expected);
    // tpm2-tools' PCR list style: a bare number belongs to the bank named before it.
    const toolsStyle = await cli(['pcrread', '--tpm', swtpm.address, '--pcrs', 'sha256:10,11+sha1:0']);
    const three = await tpm.pcrRead([{ bank: 'sha256', pcr: 10 }, { bank: 'sha256', pcr: 11 }, { bank: 'sha1', pcr: 0 }]);
    assert.equal(toolsStyle.stdout, three.map((x) => `${x.bank}:${x.pcr} ${hex(x.value)}\n`).join(''));
    const usage = await cli(['quote', '--tpm', swtpm.address, '--nonce', 'xyz', '--out', out]);
    assert.equal(usage.status, 2);
  });
});

describe('no transient object leaks', () => {
  test('a quote failing mid-way (TPM error) still flushes the AK', async () => {
    const err = await tpm
      .withAk({ alg: 'ecc' }, (ak) => tpm.quote({ nonce: new Uint8Array(100), pcrs: [{ bank: 'sha256', pcr: 10 }], ak }))
      .then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof TpmError);
    assert.equal(err.code, 'TPM_RC_SIZE');
    assert.equal(err.decoded.parameter, 1);
    assert.deepEqual(await tpm.transientHandles(), []);
  });

  test('a leaked object is found and flushed by the test helper', async () => {
    const ak = await tpm.createAk({ alg: 'ecc' });
    assert.deepEqual(await tpm.transientHandles(), [ak.handle]);
    assert.equal(await tpm.flushAllTransients(), 1);
    assert.deepEqual(await tpm.transientHandles(), []);
  });

  test('the AK is the same key on every creation (a primary from a fixed template); ReadPublic agrees', async () => {
    const a = await tpm.withAk({ alg: 'ecc' }, async (ak) => {
      const read = await tpm.readPublic(ak.handle);
      assert.equal(hex(read.outPublic), hex(ak.public));
      assert.equal(hex(read.name), hex(ak.name));
      return ak.name;
    });
    const b = await tpm.withAk({ alg: 'ecc' }, async (ak) => ak.name);
    assert.equal(hex(a), hex(b));
    assert.deepEqual(await tpm.transientHandles(), []);
  });
});

describe('transports', () => {
  test('reconnects after close', async () => {
    await tpm.close();
    assert.equal((await tpm.getRandom(8)).length, 8);
  });

  test('unknown addresses are TPM_BAD_ADDRESS', () => {
    for (const a of ['mssim:127.0.0.1:2321', 'swtpm:127.0.0.1', 'swtpm:host:99999', '/dev/tpmrm0']) {
      assert.throws(() => openTpmTransport(a), { code: 'TPM_BAD_ADDRESS' }, a);
    }
  });

  test('device transport: one write of the command, one read of the answer (on a FIFO standing in for /dev/tpmrm0)', async () => {
    const fifo = join(work, 'tpm.fifo');
    await run('mkfifo', [fifo]);
    // A FIFO opened read-write echoes what is written, and like a character device it has no offset.
    const t = new TpmDeviceTransport(fifo);
    try {
      const cmd = Uint8Array.from([0x80, 0x01, 0, 0, 0, 0x0c, 0, 0, 0x01, 0x7b, 0, 0x10]);
      assert.equal(hex(await t.send(cmd)), hex(cmd));
    } finally {
      await t.close();
    }
    await assert.rejects(new TpmDeviceTransport(join(work, 'missing')).send(new Uint8Array(10)), { code: 'TPM_TRANSPORT_OPEN' });
  });
});
