/**
 * `imakeep policy create` and `imakeep policy check` as separate processes on the real-kernel
 * captures: a policy made from one capture, checked against the others in text and JSON, from a
 * global index, with violations rejected; exit 0 / 1 / 2 and the error code of a bad policy.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FIXTURES, REPO_ROOT } from '../ima/_fixtures.js';

const CLI = join(REPO_ROOT, 'dist/src/cli.js');
const log = (capture: string, file = 'binary_runtime_measurements'): string => `${FIXTURES}/${capture}/log-a/${file}`;

function imakeep(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
}

describe('imakeep policy', () => {
  const work = mkdtempSync(join(tmpdir(), 'imakeep-policy-cli-'));
  const policy = join(work, 'short.json');

  before(() => {
    const r = imakeep('policy', 'create', log('short-ima-ng'), '--out', policy);
    assert.equal(r.status, 0, r.stderr);
  });

  it('create writes a Keylime runtime policy of the log', () => {
    const doc = JSON.parse(readFileSync(policy, 'utf8')) as { meta: { version: number; generator: number }; digests: Record<string, string[]> };
    assert.equal(doc.meta.version, 1);
    assert.equal(doc.meta.generator, 3);
    assert.equal(Object.keys(doc.digests).length, 14);
    // From the ASCII list, the same policy but for its timestamp.
    const ascii = imakeep('policy', 'create', log('short-ima-ng', 'ascii_runtime_measurements'), '--format', 'ascii');
    assert.equal(ascii.status, 0, ascii.stderr);
    assert.deepEqual((JSON.parse(ascii.stdout) as { digests: unknown }).digests, doc.digests);
  });

  it('check: exit 0 on its own log, 1 with one line per failing record on another', () => {
    const same = imakeep('policy', 'check', log('short-ima-ng'), '--policy', policy);
    assert.equal(same.status, 0, same.stderr);
    assert.match(same.stdout, /^OK: records 0\.\.13: 14 passed, 0 failed;/);
    const other = imakeep('policy', 'check', log('keys-ima-ng', 'ascii_runtime_measurements'), '--format', 'ascii', '--policy', policy);
    assert.equal(other.status, 1, other.stderr);
    const lines = other.stdout.trim().split('\n');
    assert.deepEqual(lines.slice(0, 2), [
      'FAIL 3 ima-buf .builtin_trusted_keys sha256:e10cdfe6ca9402f53845865d09305a63eef0fdfeb3d92a28cafca181326008ed keyring_not_allowed',
      'FAIL 5 ima-ng /etc/capture-info sha256:6f29793da4cb0c562b8ef7956a0e2f097924b51c36c07a9f0a1f7c7319da0702 digest_not_allowed',
    ]);
    assert.match(lines[2] ?? '', /^FAILED: records 0\.\.14: 13 passed, 2 failed \(digest_not_allowed 1, keyring_not_allowed 1\)/);
  });

  it('check --json --from N --violations reject: one JSON document, indexes global', () => {
    const r = imakeep('policy', 'check', log('violations-ima-sig'), '--policy', policy, '--json', '--from', '10', '--violations', 'reject');
    assert.equal(r.status, 1, r.stderr);
    const out = JSON.parse(r.stdout) as { ok: boolean; findings: { index: number; reasons: string[] }[]; summary: { from: number; records: number; reasons: Record<string, number> } };
    assert.equal(out.ok, false);
    assert.equal(out.summary.from, 10);
    assert.equal(out.summary.records, 10);
    assert.deepEqual(out.findings.map((f) => `${f.index} ${f.reasons.join(',')}`), ['14 violation', '15 not_in_policy', '16 not_in_policy', '17 violation', '18 not_in_policy', '19 not_in_policy']);
  });

  it('a bad policy is exit 1 with its code; a usage error exit 2', () => {
    const bad = join(work, 'bad.json');
    writeFileSync(bad, JSON.stringify({ meta: { version: 1, generator: 1 } }));
    const r = imakeep('policy', 'check', log('short-ima-ng'), '--policy', bad);
    assert.equal(r.status, 1);
    assert.equal(r.stderr, 'imakeep: POLICY_SCHEMA: release must be a non-negative integer (got missing)\n');
    assert.equal(imakeep('policy', 'check', log('short-ima-ng')).status, 2);
    assert.equal(imakeep('policy', 'check', log('short-ima-ng'), '--policy', policy, '--from', '-1').status, 2);
    assert.equal(imakeep('policy', 'frob').status, 2);
    assert.equal(imakeep('policy', 'check', log('short-ima-ng'), '--policy', join(work, 'missing.json')).status, 2);
  });
});
