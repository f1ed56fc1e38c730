/**
 * The modules' error classes share one shape (`DetailedError` of src/errors.ts): a stable code,
 * the data to act on in `details`, the cause kept, the class name as `name`. Codes and public
 * field names are what callers and the README switch on.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DetailedError, ImakeepError, isImakeepError } from '../../src/errors.js';
import { CollectorError } from '../../src/collector/index.js';
import { ServeError } from '../../src/serve/index.js';
import { StoreError } from '../../src/store/index.js';
import { VerifyError } from '../../src/verify/index.js';

describe('error classes with details', () => {
  it('carry code, details, cause and name; details default to {}', () => {
    const cause = new Error('ENOSPC');
    const store = new StoreError('STORE_WRITE_FAILED', 'write failed', { boot: 2, key: 'chunk/2/40' }, { cause });
    assert.equal(store.code, 'STORE_WRITE_FAILED');
    assert.deepEqual(store.details, { boot: 2, key: 'chunk/2/40' });
    assert.equal(store.cause, cause);
    assert.equal(store.name, 'StoreError');
    assert.equal(store.message, 'write failed');
    const collector = new CollectorError('COLLECTOR_STOPPED', 'closed');
    assert.deepEqual(collector.details, {});
    assert.equal(collector.name, 'CollectorError');
    const serve = new ServeError('SERVE_RANGE', 'from past the end', { boot: 0, index: 9, count: 5 });
    assert.equal(serve.httpStatus, 416);
    assert.equal(serve.details.count, 5);
    const verify = new VerifyError('VERIFY_NONCE_CHAIN', 'broken', { boot: 1 });
    assert.equal(verify.details.boot, 1);
    for (const e of [store, collector, serve, verify]) {
      assert.ok(e instanceof DetailedError && e instanceof ImakeepError && isImakeepError(e));
    }
  });
});
