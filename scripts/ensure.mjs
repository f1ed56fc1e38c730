#!/usr/bin/env node
// Installs what a fresh Debian machine of this kind lacks before a job runs: `npm ci` when
// node_modules is missing, Debian packages with apt-get when missing (as root), else a clear
// message. Plain Node, no dependencies: it runs before node_modules exists.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Debian packages each job needs (linux-kbuild-6.1: the kernel's scripts/sign-file, for appended-signature tests). */
const BASE = ['swtpm', 'swtpm-tools', 'tpm2-tools', 'libfuse2', 'fuse3', 'ima-evm-utils', 'linux-kbuild-6.1', 'gcc', 'pkg-config', 'libfuse3-dev', 'postgresql'];
const PROFILES = {
  test: BASE,
  demo: BASE,
  bench: [...BASE, 'time', 'strace'],
  qemu: [...BASE, 'qemu-system-x86', 'cpio', 'busybox-static'],
};

function say(msg) {
  process.stderr.write(`ensure: ${msg}\n`);
}

function installed(pkg) {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Status}', pkg], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.includes('install ok installed');
}

const profile = process.argv[2] ?? 'test';
// In CI (`CI=true`) the test command runs every suite, the QEMU boot included (scripts/run-tests.mjs).
const wanted = profile === 'test' && process.env.CI === 'true' ? PROFILES.qemu : PROFILES[profile];
if (!wanted) {
  say(`unknown profile '${profile}' (one of ${Object.keys(PROFILES).join(', ')})`);
  process.exit(2);
}

if (!existsSync(join(root, 'node_modules'))) {
  say('node_modules is missing: npm ci');
  execFileSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: root, stdio: 'inherit' });
}

const missing = wanted.filter((p) => !installed(p));
if (missing.length > 0) {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    say(`missing Debian packages: ${missing.join(' ')}`);
    say(`run as root, or install them: sudo apt-get install -y ${missing.join(' ')}`);
    process.exit(1);
  }
  say(`installing Debian packages: ${missing.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const update = spawnSync('apt-get', ['update'], { stdio: 'inherit', env });
  const install = spawnSync('apt-get', ['install', '-y', '--no-install-recommends', ...missing], { stdio: 'inherit', env });
  if (update.status !== 0 || install.status !== 0) {
    say(`apt-get could not install: ${missing.filter((p) => !installed(p)).join(' ')}`);
    say('check that the Debian package mirror is reachable, then run the command again');
    process.exit(1);
  }
}
