import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { KernelConfigError, KernelPackageError, QemuToolError } from './errors.js';
import { pipeTools, runTool } from './exec.js';

/** Options every guest kernel must have built in (`=y`, not `=m`): the TPM must be found before IMA
 * initialises or boot_aggregate is all zeros and nothing is extended (real-kernel/README.md). */
export const REQUIRED_KERNEL_OPTIONS = ['CONFIG_SECURITYFS', 'CONFIG_IMA', 'CONFIG_TCG_TPM', 'CONFIG_TCG_TIS'] as const;

/** The kernel a guest boots, and what its config says. */
export interface GuestKernel {
  /** Path of the bzImage. */
  vmlinuz: string;
  /** `uname -r` of the kernel (from the `vmlinuz-<release>` name). */
  release: string;
  /** Debian package it came from, or null for a kernel given by path. */
  debianPackage: string | null;
  /** Path of its `config-<release>`, or null when none was found next to a kernel given by path. */
  configPath: string | null;
  /** Every `CONFIG_X=value` of that file (empty without a config). */
  config: ReadonlyMap<string, string>;
}

/** Parses a kernel `.config`: `CONFIG_X=value` lines; `# CONFIG_X is not set` and comments are skipped. */
export function parseKernelConfig(text: string): Map<string, string> {
  const options = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^(CONFIG_[A-Za-z0-9_]+)=(.*)$/.exec(line);
    if (m?.[1] !== undefined && m[2] !== undefined) options.set(m[1], m[2]);
  }
  return options;
}

/** The options of {@link REQUIRED_KERNEL_OPTIONS} that `config` does not set to `y`. */
export function missingKernelOptions(config: ReadonlyMap<string, string>): string[] {
  return REQUIRED_KERNEL_OPTIONS.filter((o) => config.get(o) !== 'y');
}

/** The package `linux-image-amd64` currently depends on (e.g. `linux-image-6.1.0-56-amd64`). */
export async function defaultKernelPackage(): Promise<string> {
  const { stdout } = await runTool('apt-cache', ['depends', 'linux-image-amd64']);
  const m = /Depends:\s*(linux-image-\S+)/.exec(stdout);
  if (m?.[1] === undefined) throw new KernelPackageError('linux-image-amd64', `apt-cache depends names no linux-image-*:\n${stdout}`);
  return m[1];
}

function releaseOf(vmlinuz: string): string {
  const name = basename(vmlinuz);
  return name.startsWith('vmlinuz-') ? name.slice('vmlinuz-'.length) : name;
}

function loadKernel(vmlinuz: string, configPath: string | null, debianPackage: string | null): GuestKernel {
  const config = configPath === null ? new Map<string, string>() : parseKernelConfig(readFileSync(configPath, 'utf8'));
  if (configPath !== null) {
    const missing = missingKernelOptions(config);
    if (missing.length > 0) throw new KernelConfigError(configPath, missing);
  }
  return { vmlinuz, release: releaseOf(vmlinuz), debianPackage, configPath, config };
}

/**
 * `apt-get download`, once more after `apt-get update` when it fails: a package list older than
 * the mirror names a security update the mirror no longer has.
 */
async function downloadPackage(debianPackage: string, dir: string): Promise<void> {
  try {
    await runTool('apt-get', ['download', debianPackage], { cwd: dir });
  } catch (first) {
    if (!(first instanceof QemuToolError)) throw first;
    await runTool('apt-get', ['update']);
    await runTool('apt-get', ['download', debianPackage], { cwd: dir });
  }
}

/**
 * Downloads a Debian kernel package into `cacheDir` without installing it (`apt-get download`),
 * unpacks only its `/boot` (`dpkg-deb --fsys-tarfile | tar -x ./boot`: the modules are not needed,
 * IMA and the TPM driver are built in) and checks its config. Reuses a previous download.
 */
export async function fetchDebianKernel(debianPackage: string, cacheDir: string): Promise<GuestKernel> {
  const dir = join(cacheDir, debianPackage);
  mkdirSync(dir, { recursive: true });
  const findDeb = (): string | undefined => readdirSync(dir).find((f) => f.startsWith(`${debianPackage}_`) && f.endsWith('.deb'));
  let deb = findDeb();
  if (deb === undefined) {
    await downloadPackage(debianPackage, dir);
    deb = findDeb();
    if (deb === undefined) throw new KernelPackageError(debianPackage, `apt-get download left no .deb in ${dir}`);
  }
  const boot = join(dir, 'root', 'boot');
  if (!existsSync(boot)) {
    mkdirSync(join(dir, 'root'), { recursive: true });
    await pipeTools(['dpkg-deb', '--fsys-tarfile', join(dir, deb)], ['tar', '-x', '-C', join(dir, 'root'), './boot']);
  }
  const image = readdirSync(boot).find((f) => f.startsWith('vmlinuz-'));
  if (image === undefined) throw new KernelPackageError(debianPackage, `${deb} has no /boot/vmlinuz-*`);
  const release = releaseOf(image);
  return loadKernel(join(boot, image), join(boot, `config-${release}`), debianPackage);
}

/**
 * Resolves the harness's kernel parameter: a path to a bzImage (its `config-<release>` is read
 * from the same folder when present), or a Debian package name; undefined means the package
 * `linux-image-amd64` depends on today.
 */
export async function resolveGuestKernel(spec: string | undefined, cacheDir: string): Promise<GuestKernel> {
  if (spec !== undefined && (spec.includes('/') || existsSync(spec))) {
    const config = join(dirname(spec), `config-${releaseOf(spec)}`);
    return loadKernel(spec, existsSync(config) ? config : null, null);
  }
  return fetchDebianKernel(spec ?? (await defaultKernelPackage()), cacheDir);
}
