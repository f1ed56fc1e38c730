/**
 * Compiles the FUSE daemon (securityfs.c) once per source version, into `dist/hw/securityfs/bin/`.
 * Needs gcc and libfuse3-dev (scripts/ensure.mjs installs them).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ImakeepError } from '../../src/errors.js';

/** The daemon could not be built (compiler or libfuse3 headers missing). */
export class EmulatorBuildError extends ImakeepError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('EMULATOR_BUILD_FAILED', message, options);
  }
}

/** Repository root, from this module's place in `dist/hw/securityfs/`. */
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const SOURCE = join(ROOT, 'hw', 'securityfs', 'securityfs.c');

function fuseFlags(): string[] {
  try {
    return execFileSync('pkg-config', ['--cflags', '--libs', 'fuse3'], { encoding: 'utf8' }).trim().split(/\s+/);
  } catch {
    return ['-I/usr/include/fuse3', '-lfuse3'];
  }
}

/** Path of the compiled daemon, building it if this source version was not built yet. */
export function securityfsDaemonPath(): string {
  const source = readFileSync(SOURCE);
  const version = createHash('sha256').update(source).digest('hex').slice(0, 12);
  const binDir = join(ROOT, 'dist', 'hw', 'securityfs', 'bin');
  const binary = join(binDir, `imakeep-securityfs-${version}`);
  if (existsSync(binary)) return binary;
  mkdirSync(binDir, { recursive: true });
  // Build beside, then rename: parallel test processes never run a half-written binary.
  const tmp = `${binary}.${process.pid}.tmp`;
  try {
    execFileSync('gcc', ['-O2', '-Wall', '-o', tmp, SOURCE, ...fuseFlags(), '-lpthread'], { stdio: ['ignore', 'ignore', 'pipe'] });
    renameSync(tmp, binary);
  } catch (err) {
    rmSync(tmp, { force: true });
    const stderr = typeof err === 'object' && err !== null && 'stderr' in err ? String((err as { stderr: unknown }).stderr) : '';
    throw new EmulatorBuildError(`cannot build ${SOURCE} (need gcc and libfuse3-dev): ${stderr || String(err)}`, { cause: err });
  }
  // Builds of older sources are never used again (a running one keeps its inode).
  for (const name of readdirSync(binDir)) {
    if (/^imakeep-securityfs-[0-9a-f]{12}$/.test(name) && join(binDir, name) !== binary) rmSync(join(binDir, name), { force: true });
  }
  return binary;
}
