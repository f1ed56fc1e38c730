/**
 * Names of the IMA files in securityfs (docs/kernel.md#files-in-securityfs, docs/ima-formats.md#per-bank-lists). Pure: no I/O.
 */
import type { BankName } from '../ima/record.js';

/** Where securityfs is mounted on a device. */
export const DEFAULT_SECURITYFS_ROOT = '/sys/kernel/security';

/** The IMA directory below the root: `ima` (a symlink since 4.x) or `integrity/ima`. */
export const IMA_DIR_CANDIDATES: readonly string[] = ['ima', 'integrity/ima'];

/** Format of a list file. */
export type ListFormat = 'binary' | 'ascii';

/** Records now in the current list (docs/kernel.md#counters). */
export const COUNT_FILE = 'runtime_measurements_count';

/** Violations since boot; staging does not change it (docs/kernel.md#counters). */
export const VIOLATIONS_FILE = 'violations';

/** The boot option that makes `D` free whole records and `N` refused (docs/kernel.md#what-removal-frees). */
export const FLUSH_HTABLE_OPTION = 'ima_flush_htable';

/**
 * `{binary,ascii}_runtime_measurements_<bank>[_staged]` (the suffix comes after the algorithm,
 * docs/kernel.md#files-in-securityfs), or the legacy name (a symlink to the `_sha1` file) when `bank` is omitted.
 */
export function listFileName(format: ListFormat, bank?: BankName, staged = false): string {
  return `${format}_runtime_measurements${bank === undefined ? '' : `_${bank}`}${staged ? '_staged' : ''}`;
}

/** Parses a list file name back; undefined for any other name (counters, policy, `_tpm_alg_` files). */
export function parseListFileName(name: string): { format: ListFormat; bank: BankName | undefined; staged: boolean } | undefined {
  const m = /^(binary|ascii)_runtime_measurements(?:_(sha1|sha256|sha384|sha512))?(_staged)?$/.exec(name);
  if (m === null) return undefined;
  return { format: m[1] as ListFormat, bank: m[2] as BankName | undefined, staged: m[3] !== undefined };
}
