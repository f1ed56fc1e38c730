/**
 * Which removal flavour a kernel offers (design.md "Removal flavours"), seen two ways: the
 * project's own `probeSecurityfs()` (src/kernel/probe.ts) run by node in the guest, and, as a
 * cross-check that needs no node, the securityfs file modes the guest listed with
 * `stat -L -c '%a %n'` (docs/kernel.md#files-in-securityfs): `_staged` files exist → `staged`; the list files are
 * writable by their owner (0660 in 7.2, 0440 before) → `n`; otherwise `none`. Pure.
 */

/** Removal flavours, most capable first. */
export type RemovalFlavour = 'staged' | 'n' | 'none';

/** Path of the project's securityfs probe module, relative to the project root. */
export const KERNEL_PROBE_MODULE = 'dist/src/kernel/index.js';

/** A node `-e` program printing `probeSecurityfs()` of the module at `modulePath` as JSON. */
export function guestProbeProgram(modulePath: string): string[] {
  return ['--input-type=module', '-e', `import { probeSecurityfs } from '${modulePath}'; process.stdout.write(JSON.stringify(probeSecurityfs()));`];
}

/** The `removal` field (preferred flavour or `none`) of the probe's JSON output, or null if absent. */
export function probedRemoval(stdout: string): string | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(stdout);
  } catch {
    return null;
  }
  return typeof parsed === 'object' && parsed !== null && 'removal' in parsed && typeof parsed.removal === 'string' ? parsed.removal : null;
}

/** Parses `stat -c '%a %n'` lines into file name (last path element) → permission bits. */
export function parseStatModes(text: string): Map<string, number> {
  const modes = new Map<string, number>();
  for (const m of text.matchAll(/^([0-7]{3,4}) (\S+)$/gm)) {
    const path = m[2];
    if (m[1] !== undefined && path !== undefined) modes.set(path.slice(path.lastIndexOf('/') + 1), parseInt(m[1], 8));
  }
  return modes;
}

/** The flavours the files allow, most capable first; always ends with `none`. */
export function flavoursFromModes(modes: ReadonlyMap<string, number>): RemovalFlavour[] {
  const names = [...modes.keys()];
  const flavours: RemovalFlavour[] = [];
  if (names.some((n) => /^binary_runtime_measurements.*_staged$/.test(n))) flavours.push('staged');
  const OWNER_WRITE = 0o200;
  const lists = names.filter((n) => /^binary_runtime_measurements/.test(n) && !n.endsWith('_staged'));
  if (lists.some((n) => ((modes.get(n) ?? 0) & OWNER_WRITE) !== 0)) flavours.push('n');
  flavours.push('none');
  return flavours;
}
