/**
 * What the running kernel offers: which list files exist, whether records can be removed, and how
 * (docs/kernel.md#files-in-securityfs, #feature-detection). Decides the removal flavour the collector may use.
 */
import { BANKS, type BankName } from '../ima/record.js';
import { KernelError, errnoOf, toKernelError } from './errors.js';
import { nodeSecurityfsFiles, type SecurityfsFiles } from './files.js';
import {
  COUNT_FILE,
  DEFAULT_SECURITYFS_ROOT,
  FLUSH_HTABLE_OPTION,
  IMA_DIR_CANDIDATES,
  VIOLATIONS_FILE,
  listFileName,
  parseListFileName,
} from './layout.js';

/**
 * How records leave the kernel: `n` = write `"N\n"` to the original list (frees template data
 * only); `staged` = `"A\n"`, read the staged list, `"D\n"` (frees whole records with
 * `ima_flush_htable`). design.md, removal flavours.
 */
export type RemovalFlavour = 'n' | 'staged';

/** Result of the real write-open check on the original SHA-1 list. */
export type WriteOpenCheck = 'ok' | 'busy' | 'EPERM' | 'EACCES' | 'skipped';

/** Options of {@link probeSecurityfs}. */
export interface ProbeOptions {
  /** securityfs mount point (default `/sys/kernel/security`). */
  readonly root?: string;
  /** Kernel command line file, for `ima_flush_htable` (default `/proc/cmdline`). */
  readonly cmdlinePath?: string;
  readonly files?: SecurityfsFiles;
  /**
   * Open the original SHA-1 list read-write and close it at once, to learn whether writes are
   * allowed (CAP_SYS_ADMIN, docs/kernel.md#the-writer-lock). It takes the writer lock for microseconds. Default true.
   */
  readonly checkWriteOpen?: boolean;
}

/** What the kernel offers. Paths are absolute. */
export interface KernelCapabilities {
  readonly imaDir: string;
  /** Banks with their own list files (`_sha256`, ...), sha1 first; `['sha1']` before Linux 6.10. */
  readonly banks: readonly BankName[];
  /** Whether `{binary,ascii}_runtime_measurements_<bank>` files exist (Linux >= 6.10). */
  readonly perBankFiles: boolean;
  /** `_tpm_alg_<hex>` list files for banks the kernel cannot name (Linux >= 7.1), as found. */
  readonly unknownBankFiles: readonly string[];
  /** The SHA-1 binary list: the one to read and store (design.md, store schema). */
  readonly binaryListPath: string;
  /** Its `_staged` twin, when `CONFIG_IMA_STAGING=y`. */
  readonly stagedBinaryListPath: string | undefined;
  readonly countPath: string;
  readonly violationsPath: string;
  /** Original list files carry write permission bits (0660 since 7.2, 0440 before). */
  readonly listsWritable: boolean;
  readonly writeOpen: WriteOpenCheck;
  /** `ima_flush_htable` is on the kernel command line. */
  readonly flushHtable: boolean;
  /** Usable flavours, preferred first. */
  readonly flavours: readonly RemovalFlavour[];
  /** The preferred flavour, or `none`: archive and serve only. */
  readonly removal: RemovalFlavour | 'none';
}

const WRITE_BITS = 0o220;

function findImaDir(files: SecurityfsFiles, root: string): string {
  for (const dir of IMA_DIR_CANDIDATES) {
    const path = `${root}/${dir}`;
    if (files.stat(path)?.isDirectory === true) return path;
  }
  throw new KernelError('KERNEL_ENOENT', `no IMA directory under ${root} (is securityfs mounted and IMA enabled?)`, 'ENOENT', 'stat', root);
}

/** Tokens of the kernel command line; a token equal to the option (no value) turns it on. */
function cmdlineHas(files: SecurityfsFiles, path: string, option: string): boolean {
  const text = files.readText(path);
  return text !== undefined && text.split(/\s+/).includes(option);
}

function checkWriteOpen(files: SecurityfsFiles, path: string): WriteOpenCheck {
  let fd: number;
  try {
    fd = files.open(path, 'r+');
  } catch (err) {
    const errno = errnoOf(err);
    // EBUSY: another reader or writer holds the lock, which exists only on 7.2: writes are possible.
    if (errno === 'EBUSY') return 'busy';
    if (errno === 'EPERM' || errno === 'EACCES') return errno;
    throw toKernelError(err, 'open', path);
  }
  files.close(fd);
  return 'ok';
}

/**
 * Probes securityfs. Throws `KERNEL_ENOENT` when there is no IMA directory or no SHA-1 list.
 * Flavour order: with `ima_flush_htable` only `staged` (N is refused, docs/kernel.md#errno-semantics); else `n` first (one
 * short lock window, no kernel-side state to recover after a crash), then `staged`.
 */
export function probeSecurityfs(opts: ProbeOptions = {}): KernelCapabilities {
  const files = opts.files ?? nodeSecurityfsFiles;
  const imaDir = findImaDir(files, opts.root ?? DEFAULT_SECURITYFS_ROOT);
  const names = files.list(imaDir) ?? [];
  const perBank = new Set<BankName>();
  let staged = false;
  for (const name of names) {
    const parsed = parseListFileName(name);
    if (parsed?.bank !== undefined && parsed.format === 'binary') {
      if (parsed.staged) staged ||= parsed.bank === 'sha1';
      else perBank.add(parsed.bank);
    }
  }
  const perBankFiles = perBank.size > 0;
  const banks = perBankFiles ? BANKS.filter((b) => perBank.has(b)) : (['sha1'] as BankName[]);
  const binaryListPath = `${imaDir}/${listFileName('binary', perBankFiles ? 'sha1' : undefined)}`;
  const stat = files.stat(binaryListPath);
  if (stat === undefined) {
    throw new KernelError('KERNEL_ENOENT', `no SHA-1 binary list at ${binaryListPath}`, 'ENOENT', 'stat', binaryListPath);
  }
  const listsWritable = (stat.mode & WRITE_BITS) !== 0;
  const writeOpen = listsWritable && opts.checkWriteOpen !== false ? checkWriteOpen(files, binaryListPath) : 'skipped';
  const mayWrite = listsWritable && (writeOpen === 'ok' || writeOpen === 'busy' || writeOpen === 'skipped');
  const flushHtable = cmdlineHas(files, opts.cmdlinePath ?? '/proc/cmdline', FLUSH_HTABLE_OPTION);
  const flavours: RemovalFlavour[] = [];
  if (mayWrite && !flushHtable) flavours.push('n');
  if (mayWrite && staged) flavours.push('staged');
  return {
    imaDir,
    banks,
    perBankFiles,
    unknownBankFiles: names.filter((n) => n.includes('_tpm_alg_')).sort(),
    binaryListPath,
    stagedBinaryListPath: staged ? `${imaDir}/${listFileName('binary', 'sha1', true)}` : undefined,
    countPath: `${imaDir}/${COUNT_FILE}`,
    violationsPath: `${imaDir}/${VIOLATIONS_FILE}`,
    listsWritable,
    writeOpen,
    flushHtable,
    flavours,
    removal: flavours[0] ?? 'none',
  };
}
