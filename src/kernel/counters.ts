/**
 * The counter files `runtime_measurements_count` and `violations` (docs/kernel.md#counters): one
 * decimal number and a newline. They are not list files: reading them takes no lock.
 */
import { KernelError } from './errors.js';
import { nodeSecurityfsFiles, type SecurityfsFiles } from './files.js';

/** Reads a counter file. Throws `KERNEL_ENOENT` if missing, `KERNEL_IO` if it is not a number. */
export function readCounter(path: string, files: SecurityfsFiles = nodeSecurityfsFiles): number {
  const text = files.readText(path);
  if (text === undefined) throw new KernelError('KERNEL_ENOENT', `no counter file ${path}`, 'ENOENT', 'read', path);
  const m = /^(\d+)\n?$/.exec(text);
  if (m === null) throw new KernelError('KERNEL_IO', `counter ${path} holds ${JSON.stringify(text)}`, 'EIO', 'read', path);
  return Number(m[1]);
}
