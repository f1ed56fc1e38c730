/**
 * EVM portable signatures (evm-sig) made by `evmctl sign --portable` (ima-evm-utils) with a test
 * key: evmctl is given the file's uid, gid, mode and `security.ima` (an IMA digest, or an IMA
 * signature it made), prints the xattrs it hashed and the signature (`-n -v`), and the evm-sig
 * record is built from those as ima_template_lib.c builds one (d-ng, n-ng, evmsig, xattrnames,
 * xattrlengths, xattrvalues, iuid, igid, imode). Judged against a policy whose `digests` are empty:
 * a valid signature whose `security.ima` is the record's digest passes; a tampered signature, a
 * changed mode or uid, an unknown key, a `security.ima` of another content, and a non-portable
 * header are flagged with their reason codes.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, createPublicKey } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ImaRecord } from '../../src/ima/index.js';
import { emptyPolicy, failureLines, judgeAll } from './_policy.js';
import { digestNgField, makeRecord, nameNgField } from '../../src/testing/index.js';

const work = mkdtempSync(join(tmpdir(), 'imakeep-policy-evm-'));

/** Runs evmctl: its verbose report (stderr) and its result (stdout). */
function evmctl(args: string[]): { report: string; result: string } {
  const r = spawnSync('evmctl', args, { cwd: work, encoding: 'latin1' });
  assert.equal(r.status, 0, `evmctl ${args.join(' ')}: ${r.stderr}`);
  return { report: r.stderr, result: r.stdout.trim() };
}

function makeKey(name: string): { file: string; spki: string } {
  const file = join(work, `${name}.pem`);
  const r = spawnSync('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', file]);
  assert.equal(r.status, 0);
  return { file, spki: createPublicKey(readFileSync(file)).export({ type: 'spki', format: 'der' }).toString('base64') };
}

interface Metadata {
  readonly uid: number;
  readonly gid: number;
  readonly mode: number;
}

const u32 = (n: number): Uint8Array => Uint8Array.of(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24);
const u16 = (n: number): Uint8Array => Uint8Array.of(n & 0xff, (n >>> 8) & 0xff);
const sha256 = (data: string | Uint8Array): Uint8Array => new Uint8Array(createHash('sha256').update(data).digest());
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** The evm-sig record of a file with `meta` and `security.ima` = `ima`, from what `evmctl sign --portable -n -v` hashed and signed. */
function evmRecord(path: string, content: string, ima: Uint8Array, meta: Metadata, keyFile: string, recorded: Metadata = meta): { rec: ImaRecord; evmsig: Uint8Array } {
  const file = join(work, path.replaceAll('/', '_'));
  writeFileSync(file, content);
  // evmctl reads --mode as a decimal number.
  const { report, result } = evmctl(['-v', 'sign', '--portable', '-n', '--key', keyFile, '--uid', String(meta.uid), '--gid', String(meta.gid), '--mode', String(meta.mode), '--ima', hex(ima), file]);
  const lines = report.split('\n');
  const names: string[] = [];
  const values: Uint8Array[] = [];
  lines.forEach((line, i) => {
    const m = /^name: (\S+), size: (\d+)$/.exec(line);
    if (m === null) return;
    names.push(m[1] as string);
    const value = new Uint8Array(Buffer.from(lines[i + 1] ?? '', 'hex'));
    assert.equal(value.length, Number(m[2]));
    values.push(value);
  });
  assert.ok(names.includes('security.ima'), report);
  const evmsig = new Uint8Array(Buffer.from(result, 'hex'));
  const rec = makeRecord('evm-sig', [
    digestNgField('sha256', sha256(content)),
    nameNgField(path),
    evmsig,
    nameNgField(names.join('|')),
    new Uint8Array(names.length === 0 ? [] : Buffer.concat(values.map((v) => u32(v.length)))),
    new Uint8Array(Buffer.concat(values)),
    u32(recorded.uid),
    u32(recorded.gid),
    u16(recorded.mode),
  ]);
  return { rec, evmsig };
}

/** `security.ima` holding a sha256 digest (IMA_XATTR_DIGEST_NG: type 4, hash algo 4). */
const imaDigest = (content: string): Uint8Array => Uint8Array.of(4, 4, ...sha256(content));

describe('evm-sig portable EVM signatures made by evmctl', () => {
  let key: { file: string; spki: string };
  let stranger: { file: string; spki: string };
  let keys: string;
  const meta: Metadata = { uid: 0, gid: 0, mode: 0o100755 };

  before(() => {
    key = makeKey('evm');
    stranger = makeKey('stranger');
    keys = JSON.stringify({ pubkeys: [key.spki], keyids: [] });
  });

  it('the signature evmctl makes is a portable (type 5) v2 header, and a valid one bound to the digest by security.ima passes', () => {
    const content = 'evm signed\n';
    const { rec, evmsig } = evmRecord('/usr/bin/evm-ok', content, imaDigest(content), meta, key.file);
    assert.deepEqual([evmsig[0], evmsig[1], evmsig[2]], [5, 2, 4]);
    const other = evmRecord('/usr/bin/evm-uid', 'owned by 1000\n', imaDigest('owned by 1000\n'), { uid: 1000, gid: 100, mode: 0o100644 }, key.file).rec;
    const v = judgeAll(emptyPolicy({ 'verification-keys': keys }), [rec, other]);
    assert.deepEqual(failureLines(v), []);
    assert.equal(v.summary.signaturesVerified, 2);
  });

  it('security.ima as an IMA signature (evmctl ima_sign) binds the digest when that signature verifies', () => {
    const content = 'ima and evm signed\n';
    const file = join(work, 'imasig');
    writeFileSync(file, content);
    evmctl(['ima_sign', '--sigfile', '--key', key.file, file]);
    const imaSig = new Uint8Array(readFileSync(`${file}.sig`));
    const { rec } = evmRecord('/usr/bin/evm-imasig', content, imaSig, meta, key.file);
    assert.deepEqual(failureLines(judgeAll(emptyPolicy({ 'verification-keys': keys }), [rec])), []);
  });

  it('a tampered signature, changed metadata, another key, security.ima of other content, a non-portable header are flagged', () => {
    const content = 'evm tamper\n';
    const good = evmRecord('/usr/bin/evm-t', content, imaDigest(content), meta, key.file);
    const flipped = Uint8Array.from(good.evmsig);
    flipped[flipped.length - 1] = (flipped[flipped.length - 1] ?? 0) ^ 1;
    const withEvmsig = (evmsig: Uint8Array): ImaRecord => {
      const fields = [digestNgField('sha256', sha256(content)), nameNgField('/usr/bin/evm-t'), evmsig, nameNgField('security.ima'), u32(34), imaDigest(content), u32(0), u32(0), u16(0o100755)];
      return makeRecord('evm-sig', fields);
    };
    const nonPortable = Uint8Array.from(good.evmsig);
    nonPortable[0] = 3;
    const records = [
      withEvmsig(flipped),
      // Signed with mode 0755, measured with 0777: the signature is not over these fields.
      evmRecord('/usr/bin/evm-mode', content, imaDigest(content), meta, key.file, { ...meta, mode: 0o100777 }).rec,
      evmRecord('/usr/bin/evm-uid', content, imaDigest(content), meta, key.file, { ...meta, uid: 1 }).rec,
      evmRecord('/usr/bin/evm-stranger', content, imaDigest(content), meta, stranger.file).rec,
      // A valid signature over a security.ima of other content: the measured file is not the signed one.
      evmRecord('/usr/bin/evm-other', content, imaDigest('other content\n'), meta, key.file).rec,
      withEvmsig(nonPortable),
      withEvmsig(good.evmsig.subarray(0, 20)),
    ];
    const v = judgeAll(emptyPolicy({ 'verification-keys': keys }), records);
    assert.deepEqual(failureLines(v), [
      '0 /usr/bin/evm-t evmsig_invalid,not_in_policy',
      '1 /usr/bin/evm-mode evmsig_invalid,not_in_policy',
      '2 /usr/bin/evm-uid evmsig_invalid,not_in_policy',
      '3 /usr/bin/evm-stranger evmsig_unknown_key,not_in_policy',
      '4 /usr/bin/evm-other evmsig_unbound,not_in_policy',
      '5 /usr/bin/evm-t evmsig_malformed,not_in_policy',
      '6 /usr/bin/evm-t evmsig_malformed,not_in_policy',
    ]);
    // The untampered record built the same way passes: the failures above are the changes alone.
    assert.equal(judgeAll(emptyPolicy({ 'verification-keys': keys }), [withEvmsig(good.evmsig)]).ok, true);
    // The digest listed passes the record whatever its EVM signature, as for sig.
    assert.equal(judgeAll(emptyPolicy({ 'verification-keys': keys, digests: { '/usr/bin/evm-t': [hex(sha256(content))] } }), [records[0] as ImaRecord]).ok, true);
  });
});
