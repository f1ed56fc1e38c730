import { spawn } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { GuestOutputError, GuestTimeoutError } from './errors.js';
import { GUEST_MARKERS } from './guest-init.js';
import { ctrlSocketPath } from './swtpm.js';

/** Kernel command line of the captures (real-kernel/README.md) plus what the harness adds:
 * `slab_nomerge` keeps IMA's kmalloc caches apart from other caches of the same size, so the slab
 * difference is attributed to the right cache (object sizes and counts do not change); `quiet`
 * saves console output under TCG (dmesg is still copied out); `panic=-1` with `-no-reboot` makes
 * a failed boot end QEMU at once. */
export const DEFAULT_KERNEL_CMDLINE =
  'console=ttyS0 ima_policy=tcb ima_template=ima-ng ima_hash=sha256 rootfstype=ramfs slab_nomerge quiet panic=-1';

/** Inputs of {@link bootGuest}. */
export interface BootInput {
  vmlinuz: string;
  initramfs: string;
  cmdline: string;
  /** Folder of the running swtpm started by `startSwtpmForQemu`. */
  swtpmStateDir: string;
  /** File the guest's second serial port writes to. */
  resultsPath: string;
  memoryMiB: number;
  timeoutSeconds: number;
  /** Called with each console stage line as it arrives. */
  onStage?: (stage: GuestStage) => void;
}

/** A progress line of the guest, with the host's clock. */
export interface GuestStage {
  name: string;
  /** Guest `/proc/uptime` when the guest wrote it. */
  guestUptimeSeconds: number;
  /** Seconds since QEMU was started, when the host read it. */
  hostSeconds: number;
}

/** What a finished boot left. */
export interface BootOutcome {
  stages: GuestStage[];
  console: string;
  /** The base64 text between the begin and end markers of the second serial port. */
  resultsBase64: string;
  /** Seconds from QEMU start to the end marker. */
  hostSeconds: number;
}

const POLL_MS = 200;
const STAGE_LINE = new RegExp(`${GUEST_MARKERS.stage} (\\S+) ([\\d.]+)`);
const CONSOLE_TAIL = 3000;

/** QEMU arguments: q35 with TCG (KVM is unavailable here), a TIS TPM on swtpm, two serial ports. */
export function qemuArgs(input: BootInput): string[] {
  return [
    '-machine', 'q35,accel=tcg', '-cpu', 'max', '-smp', '1', '-m', String(input.memoryMiB),
    '-nodefaults', '-no-user-config', '-display', 'none', '-monitor', 'none', '-no-reboot', '-net', 'none',
    '-kernel', input.vmlinuz, '-initrd', input.initramfs, '-append', input.cmdline,
    '-chardev', `socket,id=chrtpm,path=${ctrlSocketPath(input.swtpmStateDir)}`,
    '-tpmdev', 'emulator,id=tpm0,chardev=chrtpm', '-device', 'tpm-tis,tpmdev=tpm0',
    '-serial', 'stdio', '-serial', `file:${input.resultsPath}`,
  ];
}

/** The text between the begin and end markers, or null while the end marker has not arrived. */
export function extractResults(serialText: string): string | null {
  const begin = serialText.indexOf(GUEST_MARKERS.begin);
  const end = serialText.indexOf(GUEST_MARKERS.end, begin + 1);
  if (begin < 0 || end < 0) return null;
  return serialText.slice(begin + GUEST_MARKERS.begin.length, end);
}

/**
 * Boots the guest and waits for its results on the second serial port, then KILLS QEMU
 * (SIGKILL): a clean exit would make QEMU shut swtpm's TPM down and lose the PCRs the host
 * reads afterwards. QEMU is killed on every path, also on timeout and errors.
 */
export async function bootGuest(input: BootInput): Promise<BootOutcome> {
  const started = performance.now();
  const elapsed = (): number => (performance.now() - started) / 1000;
  const qemu = spawn('qemu-system-x86_64', qemuArgs(input), { stdio: ['pipe', 'pipe', 'pipe'] });
  const exited = new Promise<void>((resolve) => qemu.once('close', () => resolve()));
  let consoleText = '';
  let pending = '';
  const stages: GuestStage[] = [];
  const onConsole = (b: Buffer): void => {
    const text = b.toString('utf8');
    consoleText += text;
    pending += text;
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      const m = STAGE_LINE.exec(line);
      if (m?.[1] === undefined || m[2] === undefined) continue;
      const stage = { name: m[1], guestUptimeSeconds: Number(m[2]), hostSeconds: elapsed() };
      stages.push(stage);
      input.onStage?.(stage);
    }
  };
  qemu.stdout.on('data', onConsole);
  qemu.stderr.on('data', onConsole);
  try {
    let lastSize = 0;
    while (elapsed() < input.timeoutSeconds) {
      if (qemu.exitCode !== null || qemu.signalCode !== null) {
        throw new GuestOutputError(input.resultsPath, `QEMU exited (${String(qemu.exitCode ?? qemu.signalCode)}) before the results; console:\n${consoleText.slice(-CONSOLE_TAIL)}`);
      }
      const size = statSync(input.resultsPath, { throwIfNoEntry: false })?.size ?? 0;
      if (size !== lastSize) {
        lastSize = size;
        const results = extractResults(readFileSync(input.resultsPath, 'latin1'));
        if (results !== null) return { stages, console: consoleText, resultsBase64: results, hostSeconds: elapsed() };
      }
      await sleep(POLL_MS);
    }
    throw new GuestTimeoutError(input.timeoutSeconds, consoleText.slice(-CONSOLE_TAIL));
  } finally {
    if (qemu.exitCode === null && qemu.signalCode === null) qemu.kill('SIGKILL');
    await exited;
  }
}
