/**
 * Errors of the kernel interface (securityfs), one stable code per errno the 7.2 measurement list
 * files return (docs/kernel.md#errno-semantics, #the-writer-lock) and what each one tells the caller to do.
 */
import { constants } from 'node:os';
import { ImakeepError } from '../errors.js';

/** Stable codes of {@link KernelError}. */
export type KernelErrorCode =
  /** Lock conflict: another reader or writer holds the list files; retry with backoff (docs/kernel.md#the-writer-lock). */
  | 'KERNEL_EBUSY'
  /** Nothing to act on: `A` on an empty list, `D` with nothing staged, `N` > records, or a missing file. */
  | 'KERNEL_ENOENT'
  /** `D`/`N` after measurement was suspended: kexec/reboot is under way, do not store that batch twice (docs/kernel.md#reboot-and-kexec). */
  | 'KERNEL_ESTALE'
  /** `A` after suspend, or the file mode refuses the caller. */
  | 'KERNEL_EACCES'
  /** `A` while a staged list exists: a previous `A` was never followed by `D` (docs/kernel.md#errno-semantics). */
  | 'KERNEL_EEXIST'
  /** Write open without CAP_SYS_ADMIN (docs/kernel.md#errno-semantics). */
  | 'KERNEL_EPERM'
  /** Request refused: wrong file, bad format, `N` = 0, or `N` with `ima_flush_htable` (docs/kernel.md#errno-semantics). */
  | 'KERNEL_EINVAL'
  /** `N` above ULONG_MAX (kstrtoul). */
  | 'KERNEL_ERANGE'
  /** A reader position moved before the head of the list (a caller's accounting error). */
  | 'KERNEL_POSITION'
  /** Any other failure of a securityfs call. */
  | 'KERNEL_IO';

const CODE_OF_ERRNO: Readonly<Record<string, KernelErrorCode>> = {
  EBUSY: 'KERNEL_EBUSY',
  ENOENT: 'KERNEL_ENOENT',
  ESTALE: 'KERNEL_ESTALE',
  EACCES: 'KERNEL_EACCES',
  EEXIST: 'KERNEL_EEXIST',
  EPERM: 'KERNEL_EPERM',
  EINVAL: 'KERNEL_EINVAL',
  ERANGE: 'KERNEL_ERANGE',
};

/** The securityfs call that failed. */
export type KernelSyscall = 'open' | 'read' | 'write' | 'close' | 'stat' | 'readdir' | 'readlink';

/** A securityfs call failed; `errno` is the symbolic name (`EBUSY`), `attempts` counts EBUSY retries. */
export class KernelError extends ImakeepError {
  declare readonly code: KernelErrorCode;

  constructor(
    code: KernelErrorCode,
    message: string,
    readonly errno: string,
    readonly syscall: KernelSyscall,
    readonly path: string,
    readonly attempts = 1,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }

  /** True for the one code worth retrying as it is. */
  get retryable(): boolean {
    return this.code === 'KERNEL_EBUSY';
  }
}

const NAME_OF_ERRNO = new Map<number, string>(Object.entries(constants.errno).map(([name, n]) => [n, name]));

/**
 * Symbolic errno of a Node.js system error (`EBUSY`), or undefined for anything else. libuv has no
 * name for some errnos the kernel returns here, ESTALE among them: Node reports `code: 'UNKNOWN'`
 * with `errno: -116`, so the number is translated with os.constants.errno.
 */
export function errnoOf(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const { code, errno } = err as { code?: unknown; errno?: unknown };
  if (typeof code === 'string' && code !== 'UNKNOWN' && /^E[A-Z0-9]+$/.test(code)) return code;
  return typeof errno === 'number' ? NAME_OF_ERRNO.get(Math.abs(errno)) : undefined;
}

/**
 * Maps a failed securityfs call to a {@link KernelError}. An already-mapped error passes through,
 * restated with `attempts` when that is more than it says.
 */
export function toKernelError(err: unknown, syscall: KernelSyscall, path: string, attempts = 1): KernelError {
  if (err instanceof KernelError) {
    if (attempts <= err.attempts) return err;
    return new KernelError(err.code, `${err.message} after ${attempts} attempts`, err.errno, err.syscall, err.path, attempts, { cause: err });
  }
  const errno = errnoOf(err) ?? 'EIO';
  const code = CODE_OF_ERRNO[errno] ?? 'KERNEL_IO';
  const why = err instanceof Error ? err.message : String(err);
  return new KernelError(code, `${syscall} ${path}: ${errno}${attempts > 1 ? ` after ${attempts} attempts` : ''} (${why})`, errno, syscall, path, attempts, {
    cause: err,
  });
}
