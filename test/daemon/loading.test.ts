/**
 * What `imakeep run` loads at start (`node scripts/surface.mjs --json`: the CLI's run verb and
 * every module it imports, recorded by a module-loading hook). Without `--fleet` the daemon loads
 * none of the fleet client or the enrollment exchange (src/daemon/daemon.ts `fleetSync` imports
 * them when a fleet is given; test/daemon/fleet.test.ts runs that path), while `imakeep/daemon`
 * still exports the fleet option's error class and default backoff.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_BACKOFF, FleetSyncError } from '../../src/daemon/index.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

describe('imakeep run: the modules it loads', () => {
  it('loads the daemon, collector, serve and store, and nothing of src/enroll or the fleet client', () => {
    const surface = JSON.parse(execFileSync(process.execPath, [join(ROOT, 'scripts', 'surface.mjs'), '--json'], { cwd: ROOT, encoding: 'utf8' })) as {
      daemon: { modules: number; files: string[] };
    };
    const files = surface.daemon.files;
    assert.equal(files.length, surface.daemon.modules);
    for (const needed of ['dist/src/cli/run.js', 'dist/src/daemon/daemon.js', 'dist/src/collector/collector.js', 'dist/src/serve/server.js', 'dist/src/store/store.js', 'dist/src/daemon/fleet-error.js']) {
      assert.ok(files.includes(needed), `${needed} loaded`);
    }
    assert.deepEqual(
      files.filter((f) => f.startsWith('dist/src/enroll/') || f.startsWith('dist/src/fleet/') || f === 'dist/src/daemon/fleet-client.js' || f === 'dist/src/daemon/fleet-sync.js'),
      [],
    );
  });

  it('imakeep/daemon still exports the fleet option’s default backoff and error class', () => {
    assert.deepEqual(DEFAULT_BACKOFF, { initialMs: 1000, maxMs: 300_000 });
    const e = new FleetSyncError('SYNC_REFUSED', 'refused', { fleetCode: 'X', status: 409, cursor: '1:2' });
    assert.equal(e.code, 'SYNC_REFUSED');
    assert.deepEqual(e.details, { fleetCode: 'X', status: 409, cursor: '1:2' });
  });
});
