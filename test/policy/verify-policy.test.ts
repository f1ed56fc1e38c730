/**
 * `imakeep verify BUNDLE... --policy FILE` on a real store (swtpm, LevelDB): bundles exported by
 * `imakeep export` over two boots of a mixed workload (ima-sig with and without signatures, ima-buf,
 * violations) are verified, then their records judged: a policy made from both boots' records
 * passes (exit 0, one summary per boot), a policy of boot 0 alone flags boot 1's records (exit 1),
 * and `--json` adds one `{"policy": ...}` line.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ImaRecord } from '../../src/ima/index.js';
import { formatRuntimePolicy } from '../../src/policy/index.js';
import { CollectedDevice } from '../serve/_collected.js';
import { REPO_ROOT } from '../ima/_fixtures.js';
import { policyFrom } from './_policy.js';

const CLI = join(REPO_ROOT, 'dist/src/cli.js');

function imakeep(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 120_000 });
}

describe('imakeep verify --policy', () => {
  const work = mkdtempSync(join(tmpdir(), 'imakeep-verify-policy-'));
  const storeDir = join(work, 'store');
  const files: string[] = [];
  let boot0: readonly ImaRecord[] = [];
  let boot1: readonly ImaRecord[] = [];

  before(async () => {
    const device = await CollectedDevice.start({ storeDir, chunkRecords: 30 });
    try {
      for (let i = 0; i < 3; i++) await device.cycle(40 + i * 7);
      await device.reboot();
      await device.cycle(35);
      boot0 = [...device.records(0)];
      boot1 = [...device.records(1)];
    } finally {
      await device.close();
    }
    let cursor: string | undefined;
    for (let i = 0; i < 50; i++) {
      const out = join(work, `bundle-${i}.cbor`);
      const r = imakeep('export', '--store', storeDir, '--out', out, ...(cursor === undefined ? [] : ['--since', cursor]));
      assert.equal(r.status, 0, r.stderr);
      const [next, state] = r.stdout.trim().split(' ');
      files.push(out);
      if (state === 'caught-up') break;
      cursor = next;
    }
  });

  after(() => rmSync(work, { recursive: true, force: true }));

  it('a policy of every record passes: exit 0, a summary per boot', () => {
    const policy = join(work, 'all.json');
    writeFileSync(policy, formatRuntimePolicy(policyFrom([...boot0, ...boot1])));
    const r = imakeep('verify', ...files, '--trust-on-first-use', '--policy', policy); // the device (and its AK) is gone: trusted on first use
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const summaries = r.stdout.split('\n').filter((l) => l.startsWith('policy boot'));
    assert.equal(summaries.length, 2, r.stdout);
    assert.match(summaries[0] ?? '', new RegExp(`^policy boot 0 OK: records 0\\.\\.${boot0.length - 1}: ${boot0.length} passed, 0 failed`));
    assert.match(summaries[1] ?? '', new RegExp(`^policy boot 1 OK: records 0\\.\\.${boot1.length - 1}: ${boot1.length} passed, 0 failed`));
  });

  it("a policy of boot 0 flags boot 1's records; --json adds the policy verdict as a second line", () => {
    const policy = join(work, 'boot0.json');
    writeFileSync(policy, formatRuntimePolicy(policyFrom(boot0)));
    const r = imakeep('verify', ...files, '--trust-on-first-use', '--policy', policy, '--json');
    assert.equal(r.status, 1, r.stderr);
    const [verified, judged] = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(verified?.ok, true);
    const verdicts = (judged?.policy as { ok: boolean; boots: { boot: number; verdict: { ok: boolean; summary: { records: number; failed: number } } }[] });
    assert.equal(verdicts.ok, false);
    assert.deepEqual(verdicts.boots.map((b) => [b.boot, b.verdict.ok, b.verdict.summary.records]), [
      [0, true, boot0.length],
      [1, false, boot1.length],
    ]);
    assert.ok((verdicts.boots[1]?.verdict.summary.failed ?? 0) > 0);
  });

  it('--policy with a LOG is a usage error', () => {
    assert.equal(imakeep('verify', join(work, 'log.bin'), '--quote', join(work, 'q.json'), '--trust-on-first-use', '--policy', join(work, 'all.json')).status, 2);
  });
});
