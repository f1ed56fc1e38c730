/**
 * The collector daemon (`imakeep run`) as a child process, for the demo and the memory-pressure
 * bench: started against the emulator's securityfs and a TPM, watched from outside (/proc, and
 * strace for sync calls), stopped with SIGTERM like a service manager would.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, readlinkSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DAEMON_MALLOC_ENV, DAEMON_NODE_FLAGS } from '../src/daemon/index.js';
import { FLUSH_HTABLE_OPTION } from '../src/testing/index.js';
import { sampleProcess, sampleSmaps, type ProcessSample, type SmapsBreakdown } from './proc.js';
import { parseStraceSummary, straceSyncArgs, SYNC_SYSCALLS } from './strace.js';

/** Repository root, from this module's place in `dist/bench/`. */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The built CLI. */
export const CLI = join(REPO_ROOT, 'dist', 'src', 'cli.js');

/** The daemon's V8 flags on a small device (`DAEMON_NODE_FLAGS`, src/daemon/process.ts), as a deployed daemon runs. */
export const DEVICE_NODE_FLAGS = DAEMON_NODE_FLAGS;

/** Whether a verb of the CLI is built; the reason when not (the demo and bench print it). */
export function verbAvailability(verb: string): { readonly available: true } | { readonly available: false; readonly reason: string } {
  const file = join(REPO_ROOT, 'dist', 'src', 'cli', `${verb}.js`);
  if (!existsSync(file)) return { available: false, reason: `\`imakeep ${verb}\` is not built (${file} missing)` };
  // The verb table in src/cli.ts loads each verb by this specifier.
  if (!readFileSync(CLI, 'utf8').includes(`'./cli/${verb}.js'`)) return { available: false, reason: `\`imakeep ${verb}\` is built but not in the verb table of src/cli.ts` };
  return { available: true };
}

/**
 * Writes the kernel command line the emulated kernel was "booted" with into `dir` and returns its
 * path, for `--cmdline-file`: the emulator's `--flush-htable` is the boot option `ima_flush_htable`.
 */
export function emulatedCmdline(dir: string, flushHtable: boolean): string {
  const file = join(dir, 'cmdline');
  const options = ['console=ttyS0', 'ima_policy=tcb', 'ima_template=ima-ng', 'ima_hash=sha256', ...(flushHtable ? [FLUSH_HTABLE_OPTION] : [])];
  writeFileSync(file, `${options.join(' ')}\n`);
  return file;
}

/** What the collector is started with. */
export interface CollectorOptions {
  /** securityfs root of the emulator (holds `ima -> integrity/ima`). */
  readonly securityfsRoot: string;
  /** TPM address, `swtpm:HOST:PORT`. */
  readonly tpm: string;
  readonly storeDir: string;
  readonly flavour: 'auto' | 'n' | 'staged';
  /** Unix socket of its API (default: `imakeep.sock` in the store directory). */
  readonly socket?: string;
  /** Cycle period, ms (the daemon's default is 60 s; it also cycles early on 4,096 records or 2 MiB modeled). */
  readonly intervalMs?: number;
  /** A kernel command line file for its probe, e.g. one holding `ima_flush_htable` (default /proc/cmdline). */
  readonly cmdlineFile?: string;
  /** Extra arguments of `imakeep run`. */
  readonly extraArgs?: readonly string[];
  /** Count sync calls with strace (adds strace as the parent process). */
  readonly countSyncs?: string;
  /** V8 flags instead of the daemon's {@link DAEMON_NODE_FLAGS} (the bench's A/B of a setting). */
  readonly nodeFlags?: readonly string[];
  /** glibc malloc settings instead of the daemon's {@link DAEMON_MALLOC_ENV} (same). */
  readonly mallocEnv?: Readonly<Record<string, string>>;
}

/** How a collector ended. */
export interface CollectorExit {
  readonly code: number | null;
  readonly signal: string | null;
  /** It stopped by itself after SIGTERM (not killed by the grace timer), with status 0 or by the SIGTERM. */
  readonly clean: boolean;
  /** Sync calls by name, when counted. */
  readonly syncCalls?: ReadonlyMap<string, number>;
  /** The last 4 KiB of its stderr, for error reports. */
  readonly stderrTail: string;
}

/** A running collector. */
export interface CollectorProcess {
  /** The node process itself (under strace: strace's child). */
  readonly pid: number;
  /** Lines it printed so far (stdout), for progress. */
  readonly output: () => string;
  readonly exited: Promise<CollectorExit>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with its exit. Safe to call twice. */
  stop(graceMs?: number): Promise<CollectorExit>;
}

/** The arguments of `imakeep run` for these options. */
export function collectorArgs(opts: CollectorOptions): string[] {
  return [
    'run',
    '--securityfs',
    opts.securityfsRoot,
    '--tpm',
    opts.tpm,
    '--store',
    opts.storeDir,
    '--flavour',
    opts.flavour,
    ...(opts.socket === undefined ? [] : ['--socket', opts.socket]),
    ...(opts.intervalMs === undefined ? [] : ['--interval', String(opts.intervalMs)]),
    ...(opts.cmdlineFile === undefined ? [] : ['--cmdline-file', opts.cmdlineFile]),
    ...(opts.extraArgs ?? []),
  ];
}

/**
 * The pid of strace's traced `exe`, once it runs `exe`. Before that the child is still strace's own
 * fork (measured: a 1 MiB process for the first few ms), and sampling it would measure strace.
 */
async function tracedPid(stracePid: number, exe: string, timeoutMs = 5000): Promise<number> {
  const until = Date.now() + timeoutMs;
  const target = realpathSync(exe);
  while (Date.now() < until) {
    try {
      for (const task of readdirSync(`/proc/${stracePid}/task`)) {
        for (const child of readFileSync(`/proc/${stracePid}/task/${task}/children`, 'utf8').trim().split(' ')) {
          if (child !== '' && readlinkSync(`/proc/${child}/exe`) === target) return Number(child);
        }
      }
    } catch {
      // strace not started yet, or its child between fork and exec
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`strace (pid ${stracePid}) did not start ${exe} within ${timeoutMs} ms`);
}

/** Sends a signal by pid; a process already gone is not an error. */
function signalPid(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // exited meanwhile
  }
}

/** This process's environment with `malloc` settings (default the daemon's) instead of any it had. */
function daemonEnv(malloc: Readonly<Record<string, string>> = DAEMON_MALLOC_ENV): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('MALLOC_')));
  return { ...env, ...malloc };
}

/** Starts `imakeep run` with the device's V8 flags. */
export async function startCollector(opts: CollectorOptions): Promise<CollectorProcess> {
  const command = [process.execPath, ...(opts.nodeFlags ?? DEVICE_NODE_FLAGS), CLI, ...collectorArgs(opts)];
  // The daemon's glibc malloc settings, as its service unit sets them (examples/imakeep.service).
  const env = daemonEnv(opts.mallocEnv);
  const child: ChildProcess =
    opts.countSyncs === undefined
      ? spawn(command[0] ?? process.execPath, command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env })
      : spawn('strace', straceSyncArgs(opts.countSyncs, command), { stdio: ['ignore', 'pipe', 'pipe'], env });
  let stdout = '';
  let stderr = '';
  let killedByTimer = false;
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString('utf8');
  });
  child.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString('utf8')).slice(-4096);
  });
  const exited = new Promise<CollectorExit>((resolve) => {
    child.once('exit', (code, signal) => {
      let syncCalls: Map<string, number> | undefined;
      if (opts.countSyncs !== undefined) {
        try {
          const all = parseStraceSummary(readFileSync(opts.countSyncs, 'utf8'));
          syncCalls = new Map(SYNC_SYSCALLS.map((s) => [s, all.get(s) ?? 0]));
        } catch {
          syncCalls = undefined;
        }
      }
      resolve({ code, signal, clean: (code === 0 || signal === 'SIGTERM') && !killedByTimer, syncCalls, stderrTail: stderr });
    });
  });
  const spawnedPid = child.pid ?? -1;
  const pid = opts.countSyncs === undefined ? spawnedPid : await tracedPid(spawnedPid, process.execPath);
  // Should this process end without stop() (a crash, process.exit), the daemon must not outlive it.
  const killOnExit = () => {
    signalPid(pid, 'SIGKILL');
    if (child.exitCode === null) child.kill('SIGKILL');
  };
  process.on('exit', killOnExit);
  void exited.then(() => process.off('exit', killOnExit));
  let stopping: Promise<CollectorExit> | undefined;
  return {
    pid,
    output: () => stdout,
    exited,
    stop(graceMs = 10_000) {
      stopping ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return exited;
        // The daemon itself gets SIGTERM: under strace, strace then exits with it and writes its summary.
        signalPid(pid, 'SIGTERM');
        const timer = setTimeout(() => {
          killedByTimer = true;
          signalPid(pid, 'SIGKILL');
          child.kill('SIGKILL');
        }, graceMs);
        const exit = await exited;
        clearTimeout(timer);
        return exit;
      })();
      return stopping;
    },
  };
}

/** Node's floor: a process started as the daemon is, modules loaded and a store open, idle (hw/node-floor.ts). */
export interface NodeFloor {
  readonly sample: ProcessSample;
  readonly smaps: SmapsBreakdown | undefined;
}

/**
 * Measures Node's floor (hw/node-floor.ts) with the daemon's settings, or `nodeFlags` and
 * `mallocEnv` when a bench compares others: starts it on a new store in `storeDir`, samples /proc
 * once it has been idle `idleMs`, stops it.
 */
export async function measureNodeFloor(
  storeDir: string,
  opts: { readonly nodeFlags?: readonly string[]; readonly mallocEnv?: Readonly<Record<string, string>>; readonly idleMs?: number } = {},
): Promise<NodeFloor> {
  const script = join(REPO_ROOT, 'dist', 'hw', 'node-floor.js');
  const child = spawn(process.execPath, [...(opts.nodeFlags ?? DEVICE_NODE_FLAGS), script, storeDir], { stdio: ['ignore', 'pipe', 'pipe'], env: daemonEnv(opts.mallocEnv) });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString('utf8')).slice(-2048);
    });
    await new Promise<void>((resolve, reject) => {
      child.stdout?.on('data', (d: Buffer) => {
        if (d.toString('utf8').includes('ready')) resolve();
      });
      void exited.then((code) => reject(new Error(`node floor process exited with ${code} before it was ready: ${stderr.trim()}`)));
    });
    await new Promise((r) => setTimeout(r, opts.idleMs ?? 2000));
    const pid = child.pid ?? -1;
    const sample = sampleProcess(pid);
    if (sample === undefined) throw new Error(`node floor process ${pid} vanished before it was sampled`);
    return { sample, smaps: sampleSmaps(pid) };
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
}
