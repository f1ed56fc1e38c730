/** Template fields decoded and printed per docs/ima-formats.md#templates-and-fields, #ascii-list, one template at a time. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { convertTemplateData, decodeTemplateFields, formatAsciiLine, parseAsciiLine, templateFields, toHex } from '../../src/ima/index.js';
import { digestNgField, makeRecord, nameNgField } from '../../src/testing/index.js';

const sha256 = new Uint8Array(32).fill(0x11);
const ngv2 = new Uint8Array([...Buffer.from('ima:sha256:'), 0, ...sha256]);

test('template names: built-ins, custom format strings, unknown', () => {
  assert.deepEqual(templateFields('ima-sigv2'), ['d-ngv2', 'n-ng', 'sig']);
  assert.deepEqual(templateFields('d-ng|n-ng|iuid'), ['d-ng', 'n-ng', 'iuid']);
  assert.equal(templateFields('ima-future'), null);
  assert.equal(templateFields('d-ng|bogus'), null);
  assert.equal(templateFields('constructor'), null);
});

test('ima-ngv2: d-ngv2 decodes type and algorithm and prints `ima:sha256:<hex>`', () => {
  const rec = makeRecord('ima-ngv2', [ngv2, nameNgField('/usr/bin/a b')]);
  const [d, n] = decodeTemplateFields(rec).fields;
  assert.deepEqual(d?.id === 'd-ngv2' ? [d.prefix, d.digestType, d.algo, toHex(d.digest)] : [], ['ima:sha256:', 'ima', 'sha256', toHex(sha256)]);
  assert.equal(n?.id === 'n-ng' ? n.text : '', '/usr/bin/a_b');
  assert.equal(formatAsciiLine(rec), `10 ${toHex(rec.digest)} ima-ngv2 ima:sha256:${toHex(sha256)} /usr/bin/a_b\n`);
});

test('ima-modsig without signatures: three empty fields keep their three spaces', () => {
  const rec = makeRecord('ima-modsig', [digestNgField('sha256', sha256), nameNgField('/m.ko'), new Uint8Array(0), new Uint8Array(0), new Uint8Array(0)]);
  const line = formatAsciiLine(rec);
  assert.equal(line, `10 ${toHex(rec.digest)} ima-modsig sha256:${toHex(sha256)} /m.ko   \n`);
  assert.equal(toHex(parseAsciiLine(line).data), toHex(rec.data));
  const withSig = makeRecord('ima-modsig', [digestNgField('sha256', sha256), nameNgField('/m.ko'), Uint8Array.of(3, 2), digestNgField('sha256', sha256), Uint8Array.of(0xaa)]);
  assert.equal(formatAsciiLine(withSig), `10 ${toHex(withSig.digest)} ima-modsig sha256:${toHex(sha256)} /m.ko 0302 sha256:${toHex(sha256)} aa\n`);
});

test('evm-sig: uid, gid and mode print in decimal in either byte order; xattr fields as kernel strings and hex', () => {
  const u32le = (n: number) => Uint8Array.of(n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, n >>> 24);
  const fields = [
    digestNgField('sha256', sha256),
    nameNgField('/etc/passwd'),
    Uint8Array.of(5, 2),
    nameNgField('security.ima|security.evm'),
    Uint8Array.of(2, 0, 0, 0, 2, 0, 0, 0),
    Uint8Array.of(1, 2, 3, 4),
    u32le(1000),
    u32le(100),
    Uint8Array.of(0xa4, 0x81), // 0o100644
  ];
  const le = makeRecord('evm-sig', fields);
  const line = formatAsciiLine(le);
  assert.equal(line, `10 ${toHex(le.digest)} evm-sig sha256:${toHex(sha256)} /etc/passwd 0502 security.ima|security.evm 0200000002000000 01020304 1000 100 33188\n`);
  const decoded = decodeTemplateFields(le).fields;
  assert.deepEqual(decoded.slice(6).map((f) => ('value' in f ? f.value : null)), [1000n, 100n, 33188n]);
  const beData = convertTemplateData('evm-sig', le.data, 'le', 'be');
  const beRec = { ...le, data: beData };
  assert.equal(formatAsciiLine(beRec, { endian: 'be' }).split(' ').slice(3).join(' '), line.split(' ').slice(3).join(' ').replace('0200000002000000', '0000000200000002'));
  assert.equal(toHex(parseAsciiLine(line).data), toHex(le.data));
});

test('an integer field of an odd size prints nothing (ima_show_template_uint)', () => {
  const rec = makeRecord('d-ng|n-ng|iuid', [digestNgField('sha1', new Uint8Array(20)), nameNgField('x'), Uint8Array.of(1, 2, 3)]);
  assert.match(formatAsciiLine(rec), / x \n$/);
});

test("the 'ima' template: hex d, name without NUL, digest over d and the name padded to 256 bytes", () => {
  const d = new Uint8Array(20).fill(0x22);
  const rec = makeRecord('ima', [d, Buffer.from('/bin/sh')]);
  assert.equal(toHex(rec.data), `${toHex(d)}07000000${Buffer.from('/bin/sh').toString('hex')}`);
  const padded = Buffer.alloc(276);
  padded.set(d);
  padded.set(Buffer.from('/bin/sh'), 20);
  assert.equal(toHex(rec.digest), createHash('sha1').update(padded).digest('hex'));
  assert.equal(formatAsciiLine(rec), `10 ${toHex(rec.digest)} ima ${toHex(d)} /bin/sh\n`);
});
