/**
 * Pure parts of src/kernel: the kernel memory model against docs/kernel.md#kernel-memory-per-record's table, errno
 * mapping, file names.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { digestNgField, makeRecord, nameNgField, kmallocSize, listFileName, parseListFileName, toKernelError } from '../../src/testing/index.js';
import { KernelError, recordKmem } from '../../src/kernel/index.js';

describe('kernel memory model (docs/kernel.md#kernel-memory-per-record)', () => {
  it('kmalloc size classes', () => {
    assert.deepEqual([0, 1, 8, 9, 33, 65, 97, 129, 132, 193, 257, 513, 8193, 12289].map(kmallocSize), [0, 8, 8, 16, 64, 96, 128, 192, 192, 256, 512, 1024, 16384, 16384]);
  });

  it('an ima-ng record with 2 digest slots: 320 B stay after default deletion, data 128 B', () => {
    const path = `/usr/lib/x86_64-linux-gnu/${'x'.repeat(45 - 26)}`;
    assert.equal(path.length, 45);
    const rec = makeRecord('ima-ng', [digestNgField('sha256', new Uint8Array(32)), nameNgField(path)]);
    assert.deepEqual(recordKmem(rec, 2), { data: 64 + 64, entry: 64 + 64 + 192 });
    assert.equal(recordKmem(rec, 3).entry, 64 + 64 + 256, '3 banks: digests in kmalloc-256');
    assert.equal(recordKmem(rec, 4).entry, 64 + 64 + 512, '4 banks: kmalloc-512');
  });

  it('an empty sig field allocates nothing (ZERO_SIZE_PTR); a template entry grows with fields', () => {
    const rec = makeRecord('ima-sig', [digestNgField('sha256', new Uint8Array(32)), nameNgField('/bin/sh'), new Uint8Array(0)]);
    assert.deepEqual(recordKmem(rec, 2), { data: 64 + 8, entry: 64 + 96 + 192 });
  });
});

describe('errno mapping', () => {
  it('maps each errno of docs/kernel.md#errno-semantics to its code, anything else to KERNEL_IO', () => {
    const table: [string, string][] = [
      ['EBUSY', 'KERNEL_EBUSY'],
      ['ENOENT', 'KERNEL_ENOENT'],
      ['ESTALE', 'KERNEL_ESTALE'],
      ['EACCES', 'KERNEL_EACCES'],
      ['EEXIST', 'KERNEL_EEXIST'],
      ['EPERM', 'KERNEL_EPERM'],
      ['EINVAL', 'KERNEL_EINVAL'],
      ['ERANGE', 'KERNEL_ERANGE'],
      ['ENOMEM', 'KERNEL_IO'],
    ];
    for (const [errno, code] of table) {
      const err = toKernelError(Object.assign(new Error(errno), { code: errno }), 'write', '/x');
      assert.ok(err instanceof KernelError);
      assert.deepEqual([err.code, err.errno, err.syscall, err.path, err.retryable], [code, errno, 'write', '/x', code === 'KERNEL_EBUSY']);
    }
    const stale = toKernelError(Object.assign(new Error('unknown error'), { code: 'UNKNOWN', errno: -116 }), 'write', '/x');
    assert.deepEqual([stale.code, stale.errno], ['KERNEL_ESTALE', 'ESTALE']);
    assert.equal(toKernelError('not an error', 'read', '/x').code, 'KERNEL_IO');
  });
});

describe('file names (docs/kernel.md#files-in-securityfs)', () => {
  it('puts _staged after the algorithm; parses back', () => {
    assert.equal(listFileName('binary', 'sha256', true), 'binary_runtime_measurements_sha256_staged');
    assert.equal(listFileName('ascii'), 'ascii_runtime_measurements');
    assert.deepEqual(parseListFileName('ascii_runtime_measurements_sha1_staged'), { format: 'ascii', bank: 'sha1', staged: true });
    assert.deepEqual(parseListFileName('binary_runtime_measurements'), { format: 'binary', bank: undefined, staged: false });
    assert.equal(parseListFileName('ascii_runtime_measurements_staged_sha1'), undefined, 'the RFC v2 order is not 7.2');
    assert.equal(parseListFileName('runtime_measurements_count'), undefined);
  });
});
