/**
 * The CLI verbs end to end, as separate processes on a real store: `imakeep export` until caught
 * up, `imakeep verify` of the files (text and --json, state saved and resumed), a tampered file
 * refused with its code, a log checked against a saved Keylime quote, and `imakeep serve` on a
 * unix socket until SIGTERM.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeEnrollmentRecord } from '../../src/enroll/index.js';
import { startApiServer } from '../../src/serve/index.js';
import { TpmQuoter, publicKeyFromTpm2b } from '../../src/tpm/index.js';
import { CollectedDevice } from '../serve/_collected.js';
import { get } from '../serve/_http.js';

const CLI = join(process.cwd(), 'dist', 'src', 'cli.js');

function imakeep(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
}

describe('imakeep export / verify / serve', () => {
  let work: string;
  let storeDir: string;
  let akPem: string;
  /** The device's AK and another AK of its TPM (RSA), as an enrollment record would hold them. */
  let aks: { readonly device: { public: Uint8Array; name: Uint8Array }; readonly other: { public: Uint8Array; name: Uint8Array } };

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'imakeep-cli-verify-'));
    storeDir = join(work, 'store');
    const device = await CollectedDevice.start({ storeDir, chunkRecords: 30 });
    try {
      for (let i = 0; i < 4; i++) await device.cycle(40 + i * 9);
      await device.reboot();
      await device.cycle(33);
      akPem = join(work, 'ak.pem');
      const ak = await device.ak();
      writeFileSync(akPem, String(publicKeyFromTpm2b(ak.public).export({ type: 'spki', format: 'pem' })));
      const other = await device.tpm.withAk({ alg: 'rsa' }, async (rsa) => ({ public: rsa.public, name: rsa.name }));
      aks = { device: ak, other };
      // A quote and the log, saved as a verifier would (for `verify LOG --quote`).
      const socket = join(work, 'q.sock');
      const server = await startApiServer({ store: device.store, tail: device.tail(), quotes: new TpmQuoter(device.tpm) }, { socket });
      try {
        writeFileSync(join(work, 'quote.json'), (await get({ socket }, '/v1/quote?nonce=cli42')).body);
        writeFileSync(join(work, 'log.bin'), (await get({ socket }, '/v1/log')).body);
      } finally {
        await server.close();
      }
    } finally {
      await device.close();
    }
  });

  after(() => rmSync(work, { recursive: true, force: true }));

  it('export until caught up, then verify the files in order', () => {
    const files: string[] = [];
    let cursor: string | undefined;
    for (let i = 0; i < 50; i++) {
      const out = join(work, `bundle-${i}.cbor`);
      const r = imakeep('export', '--store', storeDir, '--out', out, '--max-bytes', '15000', ...(cursor === undefined ? [] : ['--since', cursor]));
      assert.equal(r.status, 0, r.stderr);
      const [next, state] = r.stdout.trim().split(' ');
      files.push(out);
      if (state === 'caught-up' && next === cursor) break;
      cursor = next;
      if (state === 'caught-up') break;
    }
    assert.ok(files.length >= 3, `${files.length} files`);
    const text = imakeep('verify', ...files, '--ak', akPem);
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, new RegExp(`OK: ${files.length} bundles, \\d+ records, \\d+ checkpoints verified; AK trusted \\(pinned by --ak\\)\n$`, 'm'));
    // Without a trusted AK: refused, unless trust on first use is asked for, and then said.
    const untrusted = imakeep('verify', ...files);
    assert.equal(untrusted.status, 1);
    assert.match(untrusted.stderr, /^imakeep: VERIFY_AK: no trusted AK/m);
    const untrustedJson = imakeep('verify', ...files, '--json');
    assert.equal(untrustedJson.status, 1);
    assert.match(untrustedJson.stdout, /"code":"VERIFY_AK"/);
    const tofu = imakeep('verify', ...files, '--trust-on-first-use');
    assert.equal(tofu.status, 0, tofu.stderr);
    assert.match(tofu.stdout, /checkpoints verified; AK trusted on first use \(not pinned: give --ak or --enrollment\)\n$/);
    const tofuJson = imakeep('verify', ...files, '--trust-on-first-use', '--json');
    assert.match(tofuJson.stdout, /"akTrust":"first-use"/);
    const json = imakeep('verify', ...files, '--ak', akPem, '--json', '--state-out', join(work, 'state.json'));
    assert.equal(json.status, 0, json.stderr);
    const report: unknown = JSON.parse(json.stdout);
    assert.ok(typeof report === 'object' && report !== null && 'ok' in report && report.ok === true);
    // Resume from the saved state: the first file no longer follows it.
    const resumed = imakeep('verify', files[0] ?? '', '--ak', akPem, '--from-checkpoint', join(work, 'state.json'), '--json');
    assert.equal(resumed.status, 1);
    assert.match(resumed.stdout, /"code":"VERIFY_CHAIN_GAP"/);
    // A tampered bundle: exit 1, the code on stderr.
    const bytes = readFileSync(files[1] ?? '');
    bytes[bytes.length - 40] = (bytes[bytes.length - 40] ?? 0) ^ 0xff;
    writeFileSync(join(work, 'tampered.cbor'), bytes);
    const bad = imakeep('verify', files[0] ?? '', join(work, 'tampered.cbor'), '--ak', akPem);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /^imakeep: VERIFY_[A-Z_]+: /m);
  });

  it('verify LOG --quote: the served log replays to the saved quote', () => {
    const ok = imakeep('verify', join(work, 'log.bin'), '--quote', join(work, 'quote.json'), '--nonce', 'cli42', '--ak', akPem);
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /^OK: records 0\.\.\d+ replay to the quoted PCR 10 \(sha1, sha256\)|^OK: records 0\.\.\d+ replay to the quoted PCR 10 \(sha256\)/);
    const wrongNonce = imakeep('verify', join(work, 'log.bin'), '--quote', join(work, 'quote.json'), '--nonce', 'other', '--ak', akPem);
    assert.equal(wrongNonce.status, 1);
    assert.match(wrongNonce.stderr, /VERIFY_SIGNATURE/);
    const noAk = imakeep('verify', join(work, 'log.bin'), '--quote', join(work, 'quote.json'), '--nonce', 'cli42');
    assert.equal(noAk.status, 1);
    assert.match(noAk.stderr, /^imakeep: VERIFY_AK: /m);
    const tofu = imakeep('verify', join(work, 'log.bin'), '--quote', join(work, 'quote.json'), '--nonce', 'cli42', '--trust-on-first-use');
    assert.equal(tofu.status, 0, tofu.stderr);
    assert.match(tofu.stdout, /AK trusted on first use/);
  });

  it('verify --enrollment trusts the AK an enrollment record proved; a record of another AK is refused', () => {
    // The record's EK fields do not matter here (test/enroll makes real ones): verify reads its AK.
    const record = (ak: { public: Uint8Array; name: Uint8Array }): string =>
      encodeEnrollmentRecord({
        deviceId: 'gateway-0042', kernelBootId: 'b', enrolledAt: new Date().toISOString(), challengeId: '00'.repeat(16),
        ekTemplate: 'L-1', ekPublic: new Uint8Array([1]), ekName: new Uint8Array([2]), ekCertificate: new Uint8Array([3]), ekCertificatePath: [],
        akPublic: ak.public, akName: ak.name, ak: { alg: 'ecc', hierarchy: 'endorsement' },
      });
    writeFileSync(join(work, 'enrollment.json'), record(aks.device));
    writeFileSync(join(work, 'other-enrollment.json'), record(aks.other));
    const args = [join(work, 'log.bin'), '--quote', join(work, 'quote.json'), '--nonce', 'cli42'];
    const ok = imakeep('verify', ...args, '--enrollment', join(work, 'enrollment.json'));
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /; AK trusted \(pinned by --enrollment\)\n$/);
    const other = imakeep('verify', ...args, '--enrollment', join(work, 'other-enrollment.json'));
    assert.equal(other.status, 1);
    assert.match(other.stderr, /^imakeep: VERIFY_SIGNATURE: /);
    const both = imakeep('verify', ...args, '--enrollment', join(work, 'enrollment.json'), '--ak', akPem);
    assert.equal(both.status, 2);
    assert.match(both.stderr, /give --ak or --enrollment, not both/);
  });

  it('imakeep serve answers on its socket until SIGTERM; export goes through it while it holds the store', async () => {
    const socket = join(storeDir, 'imakeep.sock'); // the default, where `export` looks for a daemon
    const child = spawn(process.execPath, [CLI, 'serve', '--store', storeDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => (d.toString().includes('imakeep serve: unix:') ? resolve() : undefined));
        child.once('exit', (code) => reject(new Error(`serve exited with ${String(code)}`)));
      });
      const status = await get({ socket }, '/v1/status');
      assert.equal(status.status, 200);
      const body: unknown = JSON.parse(status.body.toString());
      assert.ok(typeof body === 'object' && body !== null && 'currentBoot' in body && body.currentBoot === 1);
      const out = join(work, 'via-daemon.cbor');
      const exported = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
        const p = spawn(process.execPath, [CLI, 'export', '--store', storeDir, '--out', out]);
        let text = '';
        p.stdout.on('data', (d: Buffer) => (text += d.toString()));
        p.stderr.on('data', (d: Buffer) => (text += d.toString()));
        p.on('close', (code) => resolve({ code, stdout: text }));
      });
      assert.equal(exported.code, 0, exported.stdout);
      assert.match(exported.stdout, /^1\.\d+\.\d+ caught-up\n$/);
      assert.equal(imakeep('verify', out, '--ak', akPem).status, 0);
    } finally {
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      assert.equal(await exited, 0);
    }
  });
});
