import { closeSync, existsSync, openSync, readdirSync, readFileSync, realpathSync, statSync, writeSync } from 'node:fs';
import { join, posix } from 'node:path';
import { encodeCpioEntry, encodeCpioTrailer, type CpioEntry } from './cpio.js';
import { runTool } from './exec.js';

/** Where things live inside the guest. */
export const GUEST_PATHS = {
  busybox: '/bin/busybox',
  node: '/usr/bin/node',
  /** The project: `package.json` (ESM marker), `dist/src`, production `node_modules`. */
  app: '/app',
} as const;

/** Inputs of {@link buildInitramfs}. */
export interface InitramfsInput {
  /** Project checkout holding `package.json`, `package-lock.json`, `dist/src` and `node_modules`. */
  projectRoot: string;
  /** Text of `/init`. */
  initScript: string;
  /** Archive to write (uncompressed newc: TCG decompresses slowly and the size does not matter). */
  outPath: string;
  /** Static busybox of the host (default `/bin/busybox`). */
  busybox?: string;
  /** Node binary to copy (default `process.execPath`), with every shared library `ldd` lists. */
  node?: string;
}

/** What went into the archive. */
export interface InitramfsSummary {
  path: string;
  bytes: number;
  members: number;
}

/** The absolute library paths in `ldd` output (`libc.so.6 => /lib/... (0x..)` and `/lib64/ld-linux... (0x..)`). */
export function parseLddOutput(text: string): string[] {
  const libs: string[] = [];
  for (const line of text.split('\n')) {
    const m = /=>\s*(\/\S+)\s*\(/.exec(line) ?? /^\s*(\/\S+)\s*\(/.exec(line);
    if (m?.[1] !== undefined) libs.push(m[1]);
  }
  return libs;
}

/** The package folders `npm ci --omit=dev` would install, from the lockfile (`packages` without `dev: true`). */
export function productionPackages(lockfileText: string): string[] {
  const lock: unknown = JSON.parse(lockfileText);
  if (typeof lock !== 'object' || lock === null || !('packages' in lock)) return [];
  const packages = lock.packages;
  if (typeof packages !== 'object' || packages === null) return [];
  return Object.entries(packages)
    .filter(([key, meta]) => key.startsWith('node_modules/') && !(typeof meta === 'object' && meta !== null && 'dev' in meta && meta.dev === true))
    .map(([key]) => key);
}

/**
 * Prebuilt addons for other platforms, or for musl (`*.musl.node`, which `ldd` of glibc refuses),
 * are dead weight in an x86_64 glibc guest.
 */
function wantedInGuest(relPath: string): boolean {
  return (
    !/(^|\/)prebuilds\/(?!linux-x64(\/|$))/.test(relPath) &&
    !relPath.endsWith('.musl.node') &&
    !relPath.endsWith('.map') &&
    !relPath.endsWith('.d.ts')
  );
}

/** Collects archive members; creates each parent folder once, before its first child. */
class MemberList {
  readonly members: CpioEntry[] = [];
  private readonly dirs = new Set<string>(['']);

  dir(path: string): void {
    if (this.dirs.has(path)) return;
    this.dir(posix.dirname(path) === '.' ? '' : posix.dirname(path));
    this.dirs.add(path);
    this.members.push({ kind: 'dir', path });
  }

  add(entry: CpioEntry): void {
    const parent = posix.dirname(entry.path);
    this.dir(parent === '.' ? '' : parent);
    if (entry.kind === 'dir') this.dir(entry.path);
    else this.members.push(entry);
  }

  /** Copies a host file (symlinks resolved) to `guestPath`, keeping its executable bit. */
  hostFile(hostPath: string, guestPath: string): void {
    const real = realpathSync(hostPath);
    const mode = statSync(real).mode & 0o777;
    this.add({ kind: 'file', path: guestPath.replace(/^\//, ''), data: readFileSync(real), mode });
  }

  /** Copies a host folder recursively, keeping files `keep` accepts (relative paths). */
  hostTree(hostDir: string, guestDir: string, keep: (rel: string) => boolean): void {
    const walk = (rel: string): void => {
      for (const name of readdirSync(join(hostDir, rel))) {
        const r = rel === '' ? name : `${rel}/${name}`;
        if (!keep(r)) continue;
        const st = statSync(join(hostDir, r));
        if (st.isDirectory()) walk(r);
        else if (st.isFile()) this.hostFile(join(hostDir, r), `${guestDir}/${r}`);
      }
    };
    walk('');
  }
}

/**
 * Builds the guest's initramfs: static busybox, node with its shared libraries, the built project
 * (`dist/src` and production `node_modules`, native addons with their libraries) and `/init`.
 * `/dev/console` is included so `/init` has a console before devtmpfs is mounted.
 */
export async function buildInitramfs(input: InitramfsInput): Promise<InitramfsSummary> {
  const list = new MemberList();
  list.add({ kind: 'chardev', path: 'dev/console', major: 5, minor: 1 });
  for (const d of ['proc', 'sys', 'tmp', 'out', 'sbin', 'usr/sbin']) list.add({ kind: 'dir', path: d });
  list.add({ kind: 'file', path: 'init', data: new TextEncoder().encode(input.initScript), mode: 0o755 });
  list.hostFile(input.busybox ?? '/bin/busybox', GUEST_PATHS.busybox);
  const node = input.node ?? process.execPath;
  list.hostFile(node, GUEST_PATHS.node);

  const root = input.projectRoot;
  list.hostFile(join(root, 'package.json'), `${GUEST_PATHS.app}/package.json`);
  list.hostTree(join(root, 'dist', 'src'), `${GUEST_PATHS.app}/dist/src`, wantedInGuest);
  for (const pkg of productionPackages(readFileSync(join(root, 'package-lock.json'), 'utf8'))) {
    const hostDir = join(root, pkg);
    if (!existsSync(hostDir)) continue; // an optional dependency not installed on this platform
    list.hostTree(hostDir, `${GUEST_PATHS.app}/${pkg}`, (rel) => !rel.startsWith('node_modules') && wantedInGuest(rel));
  }
  // Native addons (classic-level, cbor-extract) need the same C++ runtime as node itself.
  const addons = list.members
    .filter((m) => m.kind === 'file' && m.path.endsWith('.node'))
    .map((m) => join(root, m.path.slice(GUEST_PATHS.app.length)));

  const libs = new Set<string>();
  for (const binary of [node, ...addons]) {
    for (const lib of parseLddOutput((await runTool('ldd', [binary])).stdout)) libs.add(lib);
  }
  for (const lib of libs) list.hostFile(lib, lib);

  const fd = openSync(input.outPath, 'w');
  let bytes = 0;
  try {
    list.members.forEach((m, i) => {
      for (const chunk of encodeCpioEntry(m, i + 1)) bytes += writeSync(fd, chunk);
    });
    bytes += writeSync(fd, encodeCpioTrailer());
  } finally {
    closeSync(fd);
  }
  return { path: input.outPath, bytes, members: list.members.length };
}
