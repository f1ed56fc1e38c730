/**
 * A private swtpm for tests, benchmarks and the emulator: TPM 2.0 on free loopback ports, state in
 * a fresh temp dir, started with `--flags not-need-init,startup-clear` so it answers TPM commands
 * at once and nobody needs its control channel (docs/tpm.md#swtpm).
 *
 * Every instance is stopped by its pid (never by name), its temp dir removed; instances still
 * running when the node process exits are killed from a process 'exit' hook.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, copyFileSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ImakeepError } from '../src/errors.js';
import type { BankName } from '../src/ima/index.js';
import { SwtpmTcpTransport, Tpm } from '../src/tpm/index.js';

/** swtpm could not be found, set up or started. */
export class SwtpmError extends ImakeepError {
  constructor(code: 'SWTPM_MISSING' | 'SWTPM_SETUP_FAILED' | 'SWTPM_START_FAILED', message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

/** Options of `startSwtpm`. */
export interface StartSwtpmOptions {
  /**
   * PCR banks to allocate with `swtpm_setup --pcr-banks` (about 1 s). Without it, a fresh state has
   * all four banks sha1, sha256, sha384, sha512 (docs/tpm.md#swtpm).
   */
  readonly banks?: readonly BankName[];
  /**
   * Manufacture the state with `swtpm_setup --create-ek-cert --create-platform-cert` (about 1 s):
   * an RSA EK (L-1 template, certificate at NV 0x01C00002; `rsaKeySize` 3072 makes it H-6 at
   * 0x01C0001C) and an ECC NIST P-384 EK (H-3, 0x01C00016), persisted at 0x81010001/0x81010016,
   * their certificates signed by swtpm's local CA (`SWTPM_LOCAL_CA`). Without `banks`, all four
   * banks stay active as in a fresh state.
   */
  readonly ekCertificates?: boolean | { readonly rsaKeySize?: 2048 | 3072 };
}

/**
 * swtpm's local CA (swtpm-tools' `swtpm_localca`, configured in /etc/swtpm-localca.conf): it
 * creates its root and issuing CA on first use, in a root-owned directory, so provisioning EK
 * certificates needs root. `certificates` are the files a verifier's CA directory needs.
 */
export const SWTPM_LOCAL_CA = {
  dir: '/var/lib/swtpm-localca',
  certificates: ['/var/lib/swtpm-localca/issuercert.pem', '/var/lib/swtpm-localca/swtpm-localca-rootca-cert.pem'],
} as const;

/** Copies swtpm's local CA certificates into `dir` (created): a verifier's `--ca` directory. Returns `dir`. */
export function swtpmCaDirectory(dir: string): string {
  mkdirSync(dir, { recursive: true });
  for (const f of SWTPM_LOCAL_CA.certificates) copyFileSync(f, join(dir, basename(f)));
  return dir;
}

/** A running swtpm. */
export interface SwtpmInstance {
  /** TPM address for `openTpmTransport`/`Tpm.open`: `swtpm:127.0.0.1:PORT`. */
  readonly address: string;
  readonly host: string;
  /** Data port (raw TPM commands). */
  readonly port: number;
  /** Control port (swtpm's own protocol): always `port + 1`, where tpm2-tss's swtpm TCTI expects it. */
  readonly ctrlPort: number;
  readonly stateDir: string;
  readonly pid: number;
  /** `TPM2TOOLS_TCTI` value for tpm2-tools: `swtpm:host=127.0.0.1,port=PORT`. */
  readonly tcti: string;
  /** Kills swtpm by its pid and removes the state dir; safe to call more than once. */
  stop(): Promise<void>;
}

const HOST = '127.0.0.1';
/** Attempts with fresh ports when another process grabbed ours between picking and binding. */
const START_ATTEMPTS = 5;
/** How long swtpm may take to answer its first command (it answers in ~11 ms here). */
const READY_TIMEOUT_MS = 10_000;

/** Running instances, killed synchronously if the process exits without stopping them. */
const running = new Map<number, string>();
let exitHookInstalled = false;

function killLeftovers(): void {
  for (const [pid, dir] of running) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
    rmSync(dir, { recursive: true, force: true });
  }
  running.clear();
}

/** Installs swtpm with apt-get when running as root; otherwise throws `SWTPM_MISSING`. */
function ensureSwtpmInstalled(): void {
  if (spawnSync('swtpm', ['--version']).error === undefined) return;
  if (process.getuid?.() !== 0) {
    throw new SwtpmError('SWTPM_MISSING', 'swtpm is not installed: apt-get install swtpm swtpm-tools tpm2-tools (or node scripts/ensure.mjs test)');
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  spawnSync('apt-get', ['update'], { stdio: 'ignore', env });
  const res = spawnSync('apt-get', ['install', '-y', 'swtpm', 'swtpm-tools', 'tpm2-tools'], { stdio: 'ignore', env });
  if (res.status !== 0) throw new SwtpmError('SWTPM_MISSING', `apt-get install swtpm failed with status ${String(res.status)}`);
}

function listenOn(port: number): Promise<Server | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(undefined));
    server.listen(port, HOST, () => resolve(server));
  });
}

const closeServer = (server: Server): Promise<void> => new Promise((resolve) => server.close(() => resolve()));

/**
 * Two loopback listeners on a free port P and its successor P + 1: tpm2-tss's `swtpm` TCTI always
 * talks to the control channel on port + 1 (tcti-swtpm.c; measured: with any other control port
 * tpm2-tools fail "Failed to connect to control socket"). The caller owns both servers.
 */
export async function listenOnPortPair(): Promise<[Server, Server]> {
  for (let tries = 0; tries < 50; tries++) {
    const data = await listenOn(0);
    const address = data?.address();
    if (data === undefined || typeof address !== 'object' || address === null) continue;
    const ctrl = address.port < 65535 ? await listenOn(address.port + 1) : undefined;
    if (ctrl !== undefined) return [data, ctrl];
    await closeServer(data);
  }
  throw new SwtpmError('SWTPM_START_FAILED', 'found no free pair of consecutive loopback ports');
}

/** A free port pair for swtpm to bind: held while checking, then released. */
async function pickPortPair(): Promise<[number, number]> {
  const servers = await listenOnPortPair();
  const ports = servers.map((server) => {
    const address = server.address();
    return typeof address === 'object' && address !== null ? address.port : 0;
  });
  await Promise.all(servers.map(closeServer));
  return [ports[0] ?? 0, ports[1] ?? 0];
}

function runSetup(stateDir: string, options: StartSwtpmOptions): void {
  const args = ['--tpm2', '--tpmstate', stateDir, '--pcr-banks', options.banks?.join(',') ?? '-', '--overwrite'];
  const ek = options.ekCertificates;
  if (ek !== undefined && ek !== false) {
    if (process.getuid?.() !== 0) {
      throw new SwtpmError('SWTPM_SETUP_FAILED', `EK certificates need root: swtpm's local CA lives in ${SWTPM_LOCAL_CA.dir}`);
    }
    args.push('--create-ek-cert', '--create-platform-cert');
    if (typeof ek === 'object' && ek.rsaKeySize !== undefined) args.push('--rsa-keysize', String(ek.rsaKeySize));
  }
  const res = spawnSync('swtpm_setup', args, { encoding: 'utf8' });
  if (res.status !== 0) {
    throw new SwtpmError('SWTPM_SETUP_FAILED', `swtpm_setup ${args.slice(3).join(' ')} failed: ${res.stderr || res.stdout}`);
  }
}

/** Inodes of the IPv4 sockets listening on 127.0.0.1:`port` (/proc/net/tcp, state 0A = LISTEN). */
function listeningInodes(port: number): Set<string> {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  const inodes = new Set<string>();
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1] === local && f[3] === '0A' && f[9] !== undefined) inodes.add(f[9]);
  }
  return inodes;
}

/**
 * True when process `pid` itself holds the listening socket of `port`. Guards against the race
 * where another process takes the port between `pickPortPair` and swtpm's bind: swtpm then exits,
 * but a probe could meanwhile be answered by the other process.
 */
function ownsListener(pid: number, port: number): boolean {
  const inodes = listeningInodes(port);
  if (inodes.size === 0) return false;
  try {
    return readdirSync(`/proc/${pid}/fd`).some((fd) => {
      try {
        const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1];
        return inode !== undefined && inodes.has(inode);
      } catch {
        return false; // fd closed meanwhile
      }
    });
  } catch {
    return false; // process gone
  }
}

/**
 * Resolves once swtpm listens on both of its ports (checked to be ITS sockets) and answers a
 * TPM2_GetRandom on the data port; rejects if it exits first.
 */
async function waitReady(child: ChildProcess, pid: number, port: number, ctrlPort: number): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`swtpm exited (${child.exitCode ?? child.signalCode})`);
    if (ownsListener(pid, port) && ownsListener(pid, ctrlPort)) {
      const tpm = new Tpm(new SwtpmTcpTransport(HOST, port, { timeoutMs: 1000 }));
      try {
        await tpm.getRandom(8);
        return;
      } catch {
        // not serving yet
      } finally {
        await tpm.close();
      }
    }
    await sleep(5);
  }
  throw new Error(`swtpm did not answer within ${READY_TIMEOUT_MS} ms`);
}

function stopChild(child: ChildProcess, pid: number): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const force = setTimeout(() => process.kill(pid, 'SIGKILL'), 3000);
    child.once('exit', () => {
      clearTimeout(force);
      resolve();
    });
    process.kill(pid, 'SIGTERM');
  });
}

/**
 * Starts a private swtpm on free loopback ports with its state in a fresh temp dir, and waits
 * until it answers. Retries with new ports if another process took them in between.
 *
 * @example
 * const swtpm = await startSwtpm();
 * try { const tpm = Tpm.open(swtpm.address); ... await tpm.close(); } finally { await swtpm.stop(); }
 */
export async function startSwtpm(options: StartSwtpmOptions = {}): Promise<SwtpmInstance> {
  ensureSwtpmInstalled();
  let lastError = '';
  for (let attempt = 0; attempt < START_ATTEMPTS; attempt++) {
    const stateDir = mkdtempSync(join(tmpdir(), 'imakeep-swtpm-'));
    try {
      if (options.banks !== undefined || (options.ekCertificates ?? false) !== false) runSetup(stateDir, options);
      const [port, ctrlPort] = await pickPortPair();
      const logFile = join(stateDir, 'swtpm.log');
      const stderrFile = join(stateDir, 'stderr.log');
      const stderrFd = openSync(stderrFile, 'w');
      const child = spawn(
        'swtpm',
        [
          'socket', '--tpm2',
          '--server', `type=tcp,port=${port},bindaddr=${HOST}`,
          '--ctrl', `type=tcp,port=${ctrlPort},bindaddr=${HOST}`,
          '--tpmstate', `dir=${stateDir}`,
          '--flags', 'not-need-init,startup-clear',
          '--log', `file=${logFile}`,
        ],
        // stderr to a file, not a pipe: a pipe would keep the event loop alive.
        { stdio: ['ignore', 'ignore', stderrFd] },
      );
      closeSync(stderrFd);
      const spawned = await new Promise<number | undefined>((resolve) => {
        child.once('spawn', () => resolve(child.pid));
        child.once('error', () => resolve(undefined));
      });
      if (spawned === undefined) throw new SwtpmError('SWTPM_START_FAILED', 'cannot spawn swtpm');
      const pid = spawned;
      running.set(pid, stateDir);
      if (!exitHookInstalled) {
        process.once('exit', killLeftovers);
        exitHookInstalled = true;
      }
      // A forgotten instance must not keep the process alive: the exit hook kills it.
      child.unref();
      try {
        await waitReady(child, pid, port, ctrlPort);
      } catch (err) {
        await stopChild(child, pid);
        running.delete(pid);
        const output = [stderrFile, logFile].map((f) => readFileSync(f, { encoding: 'utf8', flag: 'a+' })).join('');
        lastError = `${err instanceof Error ? err.message : String(err)}: ${output}`.trim();
        rmSync(stateDir, { recursive: true, force: true });
        if (/in use/i.test(lastError)) continue; // ports taken between pick and bind: new ports
        throw new SwtpmError('SWTPM_START_FAILED', lastError);
      }
      let stopping: Promise<void> | undefined;
      const stop = (): Promise<void> =>
        (stopping ??= stopChild(child, pid).then(() => {
          running.delete(pid);
          rmSync(stateDir, { recursive: true, force: true });
        }));
      return {
        address: `swtpm:${HOST}:${port}`,
        host: HOST,
        port,
        ctrlPort,
        stateDir,
        pid,
        tcti: `swtpm:host=${HOST},port=${port}`,
        stop,
      };
    } catch (err) {
      rmSync(stateDir, { recursive: true, force: true });
      throw err;
    }
  }
  throw new SwtpmError('SWTPM_START_FAILED', `no free ports after ${START_ATTEMPTS} attempts: ${lastError}`);
}
