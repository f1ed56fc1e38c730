/**
 * probeSecurityfs on the emulator (flavours by options) and on a directory tree shaped like a
 * Linux 6.1 securityfs (no per-bank files, no `_staged`, 0440 lists → flavour `none`).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nodeSecurityfsFiles, probeSecurityfs, type SecurityfsFiles } from '../../src/kernel/index.js';
import { startSecurityfsEmulator } from '../../hw/securityfs/emulator.js';
import { REPO_ROOT, sysError } from './helpers.js';

describe('probeSecurityfs', () => {
  let work: string;
  before(() => {
    work = mkdtempSync(join(tmpdir(), 'imakeep-probe-'));
  });
  after(() => {
    rmSync(work, { recursive: true, force: true });
  });

  it('a 7.2 kernel with staging: banks, both flavours, n first', async () => {
    const emu = await startSecurityfsEmulator({ banks: ['sha1', 'sha256', 'sha384'] });
    try {
      const caps = probeSecurityfs({ root: emu.securityfsRoot, cmdlinePath: join(work, 'none') });
      assert.equal(caps.imaDir, `${emu.securityfsRoot}/ima`);
      assert.deepEqual(caps.banks, ['sha1', 'sha256', 'sha384']);
      assert.equal(caps.perBankFiles, true);
      assert.equal(caps.binaryListPath, `${emu.securityfsRoot}/ima/binary_runtime_measurements_sha1`);
      assert.equal(caps.stagedBinaryListPath, `${emu.securityfsRoot}/ima/binary_runtime_measurements_sha1_staged`);
      assert.equal(caps.listsWritable, true);
      assert.equal(caps.writeOpen, 'ok');
      assert.deepEqual(caps.flavours, ['n', 'staged']);
      assert.equal(caps.removal, 'n');
      assert.equal(emu.stats().measureUsers, 0, 'the write-open check released the lock');
    } finally {
      await emu.stop();
    }
  });

  it('ima_flush_htable on the command line: staged only', async () => {
    const emu = await startSecurityfsEmulator({ flushHtable: true });
    try {
      const cmdline = join(work, 'cmdline-flush');
      writeFileSync(cmdline, 'BOOT_IMAGE=/vmlinuz ro ima_policy=tcb ima_flush_htable quiet\n');
      const caps = probeSecurityfs({ root: emu.securityfsRoot, cmdlinePath: cmdline });
      assert.equal(caps.flushHtable, true);
      assert.deepEqual(caps.flavours, ['staged']);
    } finally {
      await emu.stop();
    }
  });

  it('CONFIG_IMA_STAGING=n: n only', async () => {
    const emu = await startSecurityfsEmulator({ staging: false });
    try {
      const caps = probeSecurityfs({ root: emu.securityfsRoot, cmdlinePath: join(work, 'none') });
      assert.equal(caps.stagedBinaryListPath, undefined);
      assert.deepEqual(caps.flavours, ['n']);
    } finally {
      await emu.stop();
    }
  });

  it('a Linux 6.1 tree: legacy files only, 0440: none', () => {
    const root = join(work, 'sys-kernel-security');
    const ima = join(root, 'integrity', 'ima');
    mkdirSync(ima, { recursive: true });
    symlinkSync('integrity/ima', join(root, 'ima'));
    const capture = join(REPO_ROOT, 'test', 'fixtures', 'real-kernel', 'short-ima-ng', 'log-a');
    for (const f of ['binary_runtime_measurements', 'ascii_runtime_measurements', 'runtime_measurements_count', 'violations']) {
      copyFileSync(join(capture, f), join(ima, f));
      chmodSync(join(ima, f), 0o440);
    }
    const caps = probeSecurityfs({ root, cmdlinePath: join(work, 'none') });
    assert.deepEqual(caps.banks, ['sha1']);
    assert.equal(caps.perBankFiles, false);
    assert.equal(caps.binaryListPath, `${root}/ima/binary_runtime_measurements`);
    assert.equal(caps.listsWritable, false);
    assert.equal(caps.writeOpen, 'skipped');
    assert.deepEqual(caps.flavours, []);
    assert.equal(caps.removal, 'none');
  });

  it('no IMA directory: KERNEL_ENOENT; a write open refused with EPERM: none', async () => {
    assert.throws(() => probeSecurityfs({ root: join(work, 'empty') }), { code: 'KERNEL_ENOENT' });
    const emu = await startSecurityfsEmulator();
    try {
      const real = nodeSecurityfsFiles;
      const files: SecurityfsFiles = {
        ...real,
        open: (path, mode) => {
          if (mode === 'r+') throw sysError('EPERM');
          return real.open(path, mode);
        },
      };
      const caps = probeSecurityfs({ root: emu.securityfsRoot, cmdlinePath: join(work, 'none'), files });
      assert.equal(caps.writeOpen, 'EPERM');
      assert.equal(caps.removal, 'none');
    } finally {
      await emu.stop();
    }
  });
});
