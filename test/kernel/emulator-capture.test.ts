/**
 * The emulator replays real kernel captures: byte-identical lists (binary and ASCII) and counters;
 * with a real swtpm, boot_aggregate recomputed from its PCRs 0-9 and every record extended, the
 * list replays to the swtpm's PCR 10 (our Tpm client AND tpm2_pcrread), and evmctl accepts it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BANKS, PcrReplay, parseBinaryList, toHex } from '../../src/ima/index.js';
import { Tpm } from '../../src/tpm/index.js';
import { startSwtpm, type SwtpmInstance } from '../../hw/swtpm.js';
import { REPO_ROOT } from './helpers.js';
import { startSecurityfsEmulator } from '../../hw/securityfs/emulator.js';
import { captureForTpm, readCapture } from '../../hw/securityfs/sources.js';

const FIXTURES = join(REPO_ROOT, 'test', 'fixtures', 'real-kernel');
const CAPTURES = ['short-ima-ng', 'violations-ima-sig', 'keys-ima-ng'];

describe('emulator replays real captures byte for byte', () => {
  for (const name of CAPTURES) {
    it(name, async () => {
      const dir = join(FIXTURES, name, 'log-a');
      const emu = await startSecurityfsEmulator();
      try {
        await emu.append(readCapture(join(dir, 'binary_runtime_measurements')));
        const ima = `${emu.securityfsRoot}/ima`;
        assert.ok(readFileSync(`${ima}/binary_runtime_measurements`).equals(readFileSync(join(dir, 'binary_runtime_measurements'))));
        assert.ok(readFileSync(`${ima}/ascii_runtime_measurements`).equals(readFileSync(join(dir, 'ascii_runtime_measurements'))));
        assert.equal(readFileSync(`${ima}/runtime_measurements_count`, 'latin1'), readFileSync(join(dir, 'runtime_measurements_count'), 'latin1'));
        assert.equal(readFileSync(`${ima}/violations`, 'latin1'), readFileSync(join(dir, 'violations'), 'latin1'));
        assert.ok(readFileSync(emu.control.oracleAscii).equals(readFileSync(join(dir, 'ascii_runtime_measurements'))));
      } finally {
        await emu.stop();
      }
    });
  }
});

describe('emulator + swtpm: log first, then extend; the list verifies', () => {
  let swtpm: SwtpmInstance;
  let work: string;
  before(async () => {
    // all four banks (a fresh swtpm's default): sha384/sha512 play banks the kernel cannot hash
    swtpm = await startSwtpm();
    work = mkdtempSync(join(tmpdir(), 'imakeep-kernel-test-'));
  });
  after(async () => {
    await swtpm?.stop();
    if (work !== undefined) rmSync(work, { recursive: true, force: true });
  });

  it('violations-ima-sig replays to PCR 10 of every bank (padded too); tpm2_pcrread and evmctl agree', async () => {
    const tpm = Tpm.open(swtpm.address);
    const modes = { sha1: 'native', sha256: 'native', sha384: 'padded', sha512: 'padded' } as const;
    const emu = await startSecurityfsEmulator({ tpm, banks: ['sha1', 'sha256', 'sha384'], bankModes: modes });
    const listFile = join(work, 'binary_runtime_measurements');
    const replay = new PcrReplay({ banks: modes });
    try {
      assert.deepEqual(emu.tpmBanks, ['sha1', 'sha256', 'sha384', 'sha512']);
      const records = await captureForTpm(join(FIXTURES, 'violations-ima-sig', 'log-a', 'binary_runtime_measurements'), tpm);
      await emu.append(records);
      const list = readFileSync(`${emu.securityfsRoot}/ima/binary_runtime_measurements`);
      writeFileSync(listFile, list);
      const parsed = parseBinaryList(list);
      assert.equal(parsed.length, 20);
      for (const rec of parsed) replay.extend(rec);
      const pcrs = await tpm.pcrRead(BANKS.map((bank) => ({ bank, pcr: 10 })));
      for (const p of pcrs) assert.equal(toHex(replay.value(p.bank, 10)), toHex(p.value), `${p.bank} PCR 10 (Tpm client)`);
      // the sha384 list of a bank the kernel cannot hash shows the SHA-1 digest zero-padded
      const sha384 = parseBinaryList(readFileSync(`${emu.securityfsRoot}/ima/binary_runtime_measurements_sha384`), { digestSize: 48 });
      assert.equal(toHex(sha384[1]?.digest ?? new Uint8Array(0)), toHex(parsed[1]?.digest ?? new Uint8Array(0)) + '00'.repeat(28));
    } finally {
      await tpm.close(); // swtpm serves one data connection: free it for tpm2-tools
      await emu.stop();
    }
    const pcrFiles: string[] = [];
    for (const bank of ['sha1', 'sha256'] as const) {
      const r = spawnSync('tpm2_pcrread', [`${bank}:0,1,2,3,4,5,6,7,8,9,10`], {
        encoding: 'utf8',
        env: { ...process.env, TPM2TOOLS_TCTI: swtpm.tcti },
      });
      assert.equal(r.status, 0, r.stderr);
      const lines = [...r.stdout.matchAll(/^\s*(\d+)\s*:\s*0x([0-9A-Fa-f]+)/gm)].map((m) => `PCR-${(m[1] ?? '').padStart(2, '0')}: ${(m[2] ?? '').toLowerCase()}`);
      assert.equal(lines.length, 11);
      assert.equal(lines[10], `PCR-10: ${toHex(replay.value(bank, 10))}`, `${bank} PCR 10 (tpm2_pcrread)`);
      const file = join(work, `pcr-${bank}.txt`);
      writeFileSync(file, `${lines.join('\n')}\n`);
      pcrFiles.push(file);
    }
    const ev = spawnSync(
      'evmctl',
      ['ima_measurement', '--ignore-violations', '--pcrs', `sha1,${pcrFiles[0]}`, '--pcrs', `sha256,${pcrFiles[1]}`, listFile],
      { encoding: 'utf8' },
    );
    assert.equal(ev.status, 0, `evmctl: ${ev.stdout}${ev.stderr}`);
    // the oracle can say no: a wrong PCR 10 is refused
    const wrong = join(work, 'pcr-sha256-wrong.txt');
    writeFileSync(wrong, readFileSync(pcrFiles[1] ?? '', 'utf8').replace(/^PCR-10: .*$/m, `PCR-10: ${'00'.repeat(32)}`));
    const refused = spawnSync('evmctl', ['ima_measurement', '--ignore-violations', '--pcrs', `sha256,${wrong}`, listFile], { encoding: 'utf8' });
    assert.notEqual(refused.status, 0);
  });
});
