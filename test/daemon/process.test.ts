/**
 * The daemon's process settings (src/daemon/process.ts) and the service unit that applies them
 * (examples/imakeep.service): glibc reads its MALLOC_* variables and V8 its flags at process start
 * only, so the unit is where they take effect, and it must say what the constants say.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DAEMON_MALLOC_ENV, DAEMON_NODE_FLAGS, missingDaemonEnv } from '../../src/daemon/index.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

describe('the daemon process settings', () => {
  it('are the measured ones (bench/results/lean.md)', () => {
    assert.deepEqual(DAEMON_NODE_FLAGS, ['--max-semi-space-size=1', '--max-old-space-size=16', '--no-opt']);
    assert.deepEqual(DAEMON_MALLOC_ENV, { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '131072' });
  });

  it('examples/imakeep.service starts node with exactly them', () => {
    const unit = readFileSync(join(ROOT, 'examples', 'imakeep.service'), 'utf8').split('\n');
    const exec = unit.find((l) => l.startsWith('ExecStart='))?.slice('ExecStart='.length).split(' ') ?? [];
    assert.equal(exec[0], '/usr/bin/node');
    const script = exec.findIndex((a) => a.endsWith('/dist/src/cli.js'));
    assert.deepEqual(exec.slice(1, script), DAEMON_NODE_FLAGS);
    assert.equal(exec[script + 1], 'run');
    const env = Object.fromEntries(unit.filter((l) => l.startsWith('Environment=')).map((l) => l.slice('Environment='.length).split('=') as [string, string]));
    assert.deepEqual(env, DAEMON_MALLOC_ENV);
  });

  it('missingDaemonEnv names what an environment lacks or sets otherwise', () => {
    assert.deepEqual(missingDaemonEnv({ MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '131072' }), []);
    assert.deepEqual(missingDaemonEnv({ MALLOC_ARENA_MAX: '8' }), ['MALLOC_ARENA_MAX=2', 'MALLOC_MMAP_THRESHOLD_=131072']);
  });
});
