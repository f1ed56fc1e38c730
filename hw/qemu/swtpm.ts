import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { QemuToolError } from './errors.js';
import { runTool } from './exec.js';

/** PCR values per bank: `banks[bank][index]` = lowercase hex. */
export type PcrBanks = Record<string, Record<number, string>>;

/** A running swtpm process. */
export interface SwtpmProcess {
  readonly child: ChildProcess;
  /** Sends SIGKILL (if still running) and waits for the exit. Safe to call twice. */
  stop(): Promise<void>;
}

/** PCR banks the harness gives the TPM (as in real-kernel/README.md). */
export const SWTPM_BANKS = ['sha1', 'sha256'] as const;

const WAIT_STEP_MS = 50;
const WAIT_LIMIT_MS = 10_000;

function startSwtpm(args: readonly string[], ready: () => Promise<boolean>): Promise<SwtpmProcess> {
  const command = ['swtpm', ...args];
  const child = spawn('swtpm', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const err: Buffer[] = [];
  child.stderr?.on('data', (b: Buffer) => err.push(b));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  return (async () => {
    for (let waited = 0; waited < WAIT_LIMIT_MS; waited += WAIT_STEP_MS) {
      if (child.exitCode !== null) break;
      if (await ready()) return { child, stop };
      await sleep(WAIT_STEP_MS);
    }
    await stop();
    throw new QemuToolError(command, child.exitCode, `not ready: ${Buffer.concat(err).toString('utf8')}`);
  })();
}

/**
 * Creates a fresh TPM 2.0 state in `stateDir` with the {@link SWTPM_BANKS} banks, manufactured
 * like a real TPM: EK certificates (RSA 2048 and ECC P-384) in their TCG NV indices, signed by
 * swtpm's local CA (`SWTPM_LOCAL_CA` in hw/swtpm.ts; root only), so the guest can enroll (enroll.ts).
 */
export async function setupSwtpmState(stateDir: string): Promise<void> {
  await runTool('swtpm_setup', ['--tpm2', '--tpmstate', stateDir, '--pcr-banks', SWTPM_BANKS.join(','), '--create-ek-cert', '--overwrite']);
}

/** The control socket QEMU's `-chardev socket` connects to. */
export const ctrlSocketPath = (stateDir: string): string => join(stateDir, 'ctrl.sock');

/**
 * Starts swtpm for QEMU's `tpm-emulator` backend: control channel only, QEMU hands over the data
 * channel; no `--flags startup-clear`, the firmware sends TPM2_Startup (real-kernel/README.md).
 */
export function startSwtpmForQemu(stateDir: string): Promise<SwtpmProcess> {
  const sock = ctrlSocketPath(stateDir);
  return startSwtpm(
    ['socket', '--tpm2', '--tpmstate', `dir=${stateDir}`, '--ctrl', `type=unixio,path=${sock}`, '--log', `file=${join(stateDir, 'swtpm.log')}`],
    async () => existsSync(sock),
  );
}

/**
 * Asks the swtpm behind `ctrl.sock` to write its volatile state (PCRs) to the state folder
 * (`swtpm_ioctl -v`), so a new swtpm on the same folder resumes with the same PCRs. Needed after
 * QEMU was killed: a clean QEMU exit would have shut the TPM down instead.
 */
export async function storeVolatileState(stateDir: string): Promise<void> {
  await runTool('swtpm_ioctl', ['--unix', ctrlSocketPath(stateDir), '-v']);
}

async function freeTcpPortPair(): Promise<number> {
  const listenable = (port: number): Promise<boolean> =>
    new Promise((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
  for (;;) {
    const port = 20_000 + 2 * Math.floor(Math.random() * 20_000);
    if ((await listenable(port)) && (await listenable(port + 1))) return port;
  }
}

/** Parses `tpm2_pcrread` YAML (`  sha1:` then `    10: 0xABCD...`). */
export function parsePcrRead(text: string): PcrBanks {
  const banks: PcrBanks = {};
  let bank: Record<number, string> | undefined;
  for (const line of text.split('\n')) {
    const b = /^\s*(sha\d+|sm3_256):\s*$/.exec(line);
    if (b?.[1] !== undefined) {
      bank = {};
      banks[b[1]] = bank;
      continue;
    }
    const p = /^\s*(\d+)\s*:\s*0x([0-9A-Fa-f]+)\s*$/.exec(line);
    if (p?.[1] !== undefined && p[2] !== undefined && bank !== undefined) bank[Number(p[1])] = p[2].toLowerCase();
  }
  return banks;
}

/**
 * Runs `use` against the TPM of a stored state folder, after the VM stopped: swtpm on a loopback
 * TCP port pair (`use` gets the data port; control = port + 1) with `--flags not-need-init`, which
 * loads the stored volatile state (PCRs), and stops it afterwards.
 */
export async function withStoredSwtpm<T>(stateDir: string, use: (port: number) => Promise<T>): Promise<T> {
  const port = await freeTcpPortPair();
  const listening = (): Promise<boolean> =>
    new Promise((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(true));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(false)));
    });
  const swtpm = await startSwtpm(
    ['socket', '--tpm2', '--tpmstate', `dir=${stateDir}`, '--server', `type=tcp,port=${port},bindaddr=127.0.0.1`,
      '--ctrl', `type=tcp,port=${port + 1},bindaddr=127.0.0.1`, '--flags', 'not-need-init'],
    listening,
  );
  try {
    return await use(port);
  } finally {
    await swtpm.stop();
  }
}

/** PCRs 0-23 of every {@link SWTPM_BANKS} bank, read with `tpm2_pcrread` from swtpm's TCP data port. */
export async function pcrreadSwtpm(port: number): Promise<PcrBanks> {
  const all = Array.from({ length: 24 }, (_, i) => i).join(',');
  const selection = SWTPM_BANKS.map((b) => `${b}:${all}`).join('+');
  const { stdout } = await runTool('tpm2_pcrread', ['-T', `swtpm:host=127.0.0.1,port=${port}`, selection]);
  return parsePcrRead(stdout);
}

/** Reads PCRs 0-23 of every {@link SWTPM_BANKS} bank from a stored state folder (see {@link withStoredSwtpm}). */
export function readStoredPcrs(stateDir: string): Promise<PcrBanks> {
  return withStoredSwtpm(stateDir, pcrreadSwtpm);
}

/** PCRs as `PCR-NN: hex` lines, the format `evmctl ima_measurement --pcrs bank,FILE` reads. */
export function formatEvmctlPcrs(bank: Readonly<Record<number, string>>): string {
  return Object.entries(bank)
    .map(([i, hex]) => `PCR-${i.padStart(2, '0')}: ${hex}\n`)
    .join('');
}

/** Parses `PCR-NN: hex` lines. */
export function parseEvmctlPcrs(text: string): Record<number, string> {
  const bank: Record<number, string> = {};
  for (const m of text.matchAll(/^PCR-(\d+):\s*([0-9a-fA-F]+)\s*$/gm)) {
    if (m[1] !== undefined && m[2] !== undefined) bank[Number(m[1])] = m[2].toLowerCase();
  }
  return bank;
}
