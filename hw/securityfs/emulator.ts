/**
 * The Linux 7.2 securityfs emulator, programmatic side: mounts the FUSE daemon (securityfs.c),
 * appends records like a kernel (log first, then one PCR_Extend per record into a real TPM), and
 * unmounts. For tests, the demo and the sim (hw/sim.ts).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmdirSync, writeSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { Socket } from 'node:net';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { ImakeepError } from '../../src/errors.js';
import { extendedDigest, type BankMode, type BankName, type ImaRecord } from '../../src/ima/index.js';
import { errnoOf } from '../../src/testing/index.js';
import { Tpm } from '../../src/tpm/index.js';
import { securityfsDaemonPath } from './build.js';
import { encodeFrame, type FrameLayout } from './frame.js';

/** Codes: the daemon did not mount / died, or an append was refused. */
export type EmulatorErrorCode = 'EMULATOR_START_FAILED' | 'EMULATOR_APPEND_FAILED' | 'EMULATOR_SUSPENDED';

/** A failure of the emulator itself (not an emulated kernel errno). */
export class EmulatorError extends ImakeepError {
  declare readonly code: EmulatorErrorCode;

  constructor(code: EmulatorErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** Options of {@link startSecurityfsEmulator}. */
export interface SecurityfsEmulatorOptions {
  /** Mount point (created if missing; a stale mount there is lazily unmounted). Default: a new temp dir. */
  readonly mountDir?: string;
  /** Banks with list files (default sha1, sha256); sha1 is always included, first. */
  readonly banks?: readonly BankName[];
  /** `padded` for banks the emulated kernel cannot hash (docs/ima-formats.md#bank-modes); default native. */
  readonly bankModes?: Readonly<Partial<Record<BankName, BankMode>>>;
  /** TPM to extend (address `swtpm:HOST:PORT` or an open Tpm). Without it, records are only logged. */
  readonly tpm?: string | Tpm;
  /** Banks to extend (default: the TPM's active banks). */
  readonly tpmBanks?: readonly BankName[];
  /** `CONFIG_IMA_STAGING=y`: the `_staged` files exist (default true). */
  readonly staging?: boolean;
  /** Boot option `ima_flush_htable` (default false): `N` refused, `D` frees whole records. */
  readonly flushHtable?: boolean;
  /** seq_file buffer: one read(2) returns at most this many bytes of whole records (default 4096; 0 = no cap). */
  readonly seqBufBytes?: number;
}

/** Counters of the daemon (`.imakeep-sim/stats`). */
export interface EmulatorStats {
  readonly recordsTotal: number;
  readonly recordsDeleted: number;
  readonly recordsStaged: number;
  readonly recordsCurrent: number;
  readonly violations: number;
  readonly kmemBytes: number;
  readonly measureUsers: number;
  readonly measureWriter: number;
  readonly suspended: boolean;
}

/** Paths of the control files (not kernel files). */
export interface EmulatorControlPaths {
  readonly dir: string;
  readonly append: string;
  /** Every record ever appended, SHA-1 binary list, never deleted: the test oracle. */
  readonly oracleBinary: string;
  readonly oracleAscii: string;
  readonly kmem: string;
  readonly suspend: string;
  readonly stats: string;
}

/** Timing of one {@link SecurityfsEmulator.append}. */
export interface AppendResult {
  readonly records: number;
  /** Writing the frames to the daemon. */
  readonly logMs: number;
  /** The PCR extends that followed. */
  readonly extendMs: number;
}

/** A mounted emulator. */
export interface SecurityfsEmulator {
  readonly mountDir: string;
  /** Pass as `probeSecurityfs({ root })`: holds `ima -> integrity/ima`. */
  readonly securityfsRoot: string;
  readonly imaDir: string;
  readonly control: EmulatorControlPaths;
  readonly fileBanks: readonly BankName[];
  /** Banks extended into the TPM (empty without a TPM). */
  readonly tpmBanks: readonly BankName[];
  readonly pid: number;
  /**
   * Appends records like the kernel: each batch is logged first, then every record is extended
   * individually into the TPM (docs/kernel.md#reading-the-list: log before extend). Calls are queued.
   * Throws `EMULATOR_SUSPENDED` when measurement is suspended (nothing is logged or extended).
   */
  append(records: Iterable<ImaRecord>): Promise<AppendResult>;
  /** Measurement suspended (kexec/reboot under way): `A` → EACCES, `D`/`N` → ESTALE, appends refused. */
  setSuspended(on: boolean): void;
  stats(): EmulatorStats;
  /** Modeled kernel bytes held now (docs/kernel.md#kernel-memory-per-record). */
  kmemBytes(): number;
  /** Unmounts, stops the daemon, closes the TPM if it opened it. Safe to call twice. */
  stop(): Promise<void>;
}

/** Frames written per write(2) before the extends of that batch. */
const APPEND_BATCH = 512;

/** Mount id of what is mounted at `dir` now (/proc/self/mountinfo field 1), if anything. */
function mountIdAt(dir: string): string | undefined {
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const fields = line.split(' ');
    if (fields[4] === dir) return fields[0];
  }
  return undefined;
}

/** Lazily unmounts `dir` if something is mounted there (a crashed run's leftover). */
export function unmountStale(dir: string): void {
  if (mountIdAt(dir) === undefined) return;
  const r = spawnSync('fusermount3', ['-u', '-z', dir]);
  if (r.status !== 0) spawnSync('umount', ['-l', dir]);
}

/** rmdir, never recursive: if an unmount failed, nothing inside a live mount is touched. */
function removeEmptyDir(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    // still mounted or not empty: leave it for unmountStale of the next run
  }
}

function waitReady(child: ChildProcess, stderr: () => string): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    let out = '';
    const timer = setTimeout(() => fail(new Error('no "ready" within 10 s')), 10_000);
    const fail = (err: Error) => {
      clearTimeout(timer);
      reject(new EmulatorError('EMULATOR_START_FAILED', `securityfs daemon did not start: ${err.message} ${stderr()}`.trim(), { cause: err }));
    };
    child.once('error', fail);
    child.once('exit', (code) => fail(new Error(`exited with ${code}`)));
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString('latin1');
      if (out.includes('ready')) {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        child.removeAllListeners('error');
        resolvePromise();
      }
    });
  });
}

function parseStats(text: string): EmulatorStats {
  const v = new Map(text.trim().split('\n').map((l) => {
    const [k, n] = l.split(' ');
    return [k ?? '', Number(n)] as const;
  }));
  const num = (k: string) => v.get(k) ?? Number.NaN;
  return {
    recordsTotal: num('records_total'),
    recordsDeleted: num('records_deleted'),
    recordsStaged: num('records_staged'),
    recordsCurrent: num('records_current'),
    violations: num('violations'),
    kmemBytes: num('kmem_bytes'),
    measureUsers: num('measure_users'),
    measureWriter: num('measure_writer'),
    suspended: num('suspended') === 1,
  };
}

/** Mounts the emulator and returns once it answers. Needs root (FUSE allow_other) and /dev/fuse. */
export async function startSecurityfsEmulator(opts: SecurityfsEmulatorOptions = {}): Promise<SecurityfsEmulator> {
  const ownDir = opts.mountDir === undefined;
  const mountDir = resolve(opts.mountDir ?? mkdtempSync(join(tmpdir(), 'imakeep-securityfs-')));
  unmountStale(mountDir);
  mkdirSync(mountDir, { recursive: true });
  const fileBanks: BankName[] = ['sha1', ...(opts.banks ?? ['sha256']).filter((b) => b !== 'sha1')];
  const args = [mountDir, '--banks', fileBanks.join(','), '--seq-buf', String(opts.seqBufBytes ?? 4096), '--exit-on-stdin-eof'];
  if (opts.staging === false) args.push('--no-staging');
  if (opts.flushHtable === true) args.push('--flush-htable');
  const child = spawn(securityfsDaemonPath(), args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderrText = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderrText += d.toString('utf8');
  });
  try {
    await waitReady(child, () => stderrText);
  } catch (err) {
    child.kill('SIGKILL');
    unmountStale(mountDir);
    if (ownDir) removeEmptyDir(mountDir);
    throw err;
  }
  const mountId = mountIdAt(mountDir);
  // The daemon exits when our end of its stdin closes (we died): never keep this process alive for it.
  child.unref();
  for (const s of [child.stdin, child.stdout, child.stderr]) if (s instanceof Socket) s.unref();

  const tpm = typeof opts.tpm === 'string' ? Tpm.open(opts.tpm) : opts.tpm;
  let tpmBanks: readonly BankName[];
  try {
    tpmBanks = tpm === undefined ? [] : (opts.tpmBanks ?? (await tpm.getActiveBanks()));
  } catch (err) {
    child.kill('SIGTERM');
    if (typeof opts.tpm === 'string') await tpm?.close();
    throw err;
  }
  const modes = opts.bankModes ?? {};
  // kcalloc(NR_BANKS + ima_extra_slots): one slot per TPM bank, plus SHA-1 and ima_hash (sha256
  // here) when the TPM lacks them (docs/kernel.md#kernel-memory-per-record); without a TPM, just those two.
  const digestSlots = new Set<BankName>([...tpmBanks, 'sha1', 'sha256']).size;
  const layout: FrameLayout = { fileBanks, modes, digestSlots };
  const dir = join(mountDir, '.imakeep-sim');
  const control: EmulatorControlPaths = {
    dir,
    append: join(dir, 'append'),
    oracleBinary: join(dir, 'oracle_binary_runtime_measurements'),
    oracleAscii: join(dir, 'oracle_ascii_runtime_measurements'),
    kmem: join(dir, 'kmem'),
    suspend: join(dir, 'suspend'),
    stats: join(dir, 'stats'),
  };
  const appendFd = openSync(control.append, 'w');
  let queue: Promise<unknown> = Promise.resolve();
  let stopped = false;

  const appendNow = async (records: Iterable<ImaRecord>): Promise<AppendResult> => {
    let count = 0;
    let logMs = 0;
    let extendMs = 0;
    let batch: ImaRecord[] = [];
    const flush = async () => {
      const t0 = performance.now();
      const frames = Buffer.concat(batch.map((r) => encodeFrame(r, layout)));
      try {
        writeSync(appendFd, frames);
      } catch (err) {
        if (errnoOf(err) === 'ENODEV') throw new EmulatorError('EMULATOR_SUSPENDED', 'measurement is suspended: records not logged', { cause: err });
        throw new EmulatorError('EMULATOR_APPEND_FAILED', `append: ${String(err)}`, { cause: err });
      }
      const t1 = performance.now();
      if (tpm !== undefined) {
        for (const rec of batch) {
          const digests: Partial<Record<BankName, Uint8Array>> = {};
          for (const bank of tpmBanks) digests[bank] = extendedDigest(rec, bank, modes[bank] ?? 'native');
          await tpm.pcrExtend(rec.pcr, digests);
        }
      }
      logMs += t1 - t0;
      extendMs += performance.now() - t1;
      count += batch.length;
      batch = [];
    };
    for (const rec of records) {
      batch.push(rec);
      if (batch.length === APPEND_BATCH) await flush();
    }
    if (batch.length > 0) await flush();
    return { records: count, logMs, extendMs };
  };

  return {
    mountDir,
    securityfsRoot: mountDir,
    imaDir: join(mountDir, 'integrity', 'ima'),
    control,
    fileBanks,
    tpmBanks,
    pid: child.pid ?? -1,
    append(records) {
      const run = queue.then(() => appendNow(records));
      queue = run.catch(() => undefined);
      return run;
    },
    setSuspended(on) {
      writeFileSync(control.suspend, on ? '1\n' : '0\n');
    },
    stats: () => parseStats(readFileSync(control.stats, 'latin1')),
    kmemBytes: () => Number(readFileSync(control.kmem, 'latin1').trim()),
    async stop() {
      if (stopped) return;
      stopped = true;
      await queue;
      try {
        closeSync(appendFd);
      } catch {
        // the daemon died (ENOTCONN): nothing left to flush
      }
      if (typeof opts.tpm === 'string' && tpm !== undefined) await tpm.close();
      const exited = new Promise<void>((r) => {
        if (child.exitCode !== null || child.signalCode !== null) r();
        else child.once('exit', () => r());
      });
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
      // Only our own mount: after a crash of this daemon another emulator may be mounted there now.
      if (mountId !== undefined && mountIdAt(mountDir) === mountId) unmountStale(mountDir);
      if (ownDir) removeEmptyDir(mountDir);
    },
  };
}
