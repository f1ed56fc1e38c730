import { spawn } from 'node:child_process';
import { appendFileSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
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
  /**
   * File that receives what the guest writes to its second serial port (the results). QEMU
   * connects that port to a unix socket the host listens on, `<resultsPath>.sock`, so the host can
   * also answer (`exchange`).
   */
  resultsPath: string;
  /** Answers a node step's exchange (guest-init.ts): the file the guest sent, the answer's bytes. */
  exchange?: (step: string, sent: Uint8Array) => Promise<Uint8Array>;
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

/** The unix socket QEMU connects the guest's second serial port to (the host listens). */
export const hostPortSocketPath = (resultsPath: string): string => `${resultsPath}.sock`;

/** QEMU arguments: q35 with TCG (KVM is unavailable here), a TIS TPM on swtpm, two serial ports. */
export function qemuArgs(input: BootInput): string[] {
  return [
    '-machine', 'q35,accel=tcg', '-cpu', 'max', '-smp', '1', '-m', String(input.memoryMiB),
    '-nodefaults', '-no-user-config', '-display', 'none', '-monitor', 'none', '-no-reboot', '-net', 'none',
    '-kernel', input.vmlinuz, '-initrd', input.initramfs, '-append', input.cmdline,
    '-chardev', `socket,id=chrtpm,path=${ctrlSocketPath(input.swtpmStateDir)}`,
    '-tpmdev', 'emulator,id=tpm0,chardev=chrtpm', '-device', 'tpm-tis,tpmdev=tpm0',
    '-chardev', `socket,id=chrhost,path=${hostPortSocketPath(input.resultsPath)}`,
    '-serial', 'stdio', '-serial', 'chardev:chrhost',
  ];
}

/** The text between the begin and end markers, or null while the end marker has not arrived. */
export function extractResults(serialText: string): string | null {
  const begin = serialText.indexOf(GUEST_MARKERS.begin);
  const end = serialText.indexOf(GUEST_MARKERS.end, begin + 1);
  if (begin < 0 || end < 0) return null;
  return serialText.slice(begin + GUEST_MARKERS.begin.length, end);
}

/** One exchange the guest asked for: its step and the file it sent. */
export interface ExchangeRequest {
  step: string;
  sent: Uint8Array;
  /** Offset in the serial text right after the end marker. */
  end: number;
}

/** The first complete exchange request in `serialText` at or after `from`, or null. */
export function extractExchange(serialText: string, from: number): ExchangeRequest | null {
  const begin = serialText.indexOf(GUEST_MARKERS.exchangeBegin, from);
  if (begin < 0) return null;
  const lineEnd = serialText.indexOf('\n', begin);
  const end = serialText.indexOf(GUEST_MARKERS.exchangeEnd, begin);
  if (lineEnd < 0 || end < 0) return null;
  const step = serialText.slice(begin + GUEST_MARKERS.exchangeBegin.length, lineEnd).trim();
  return { step, sent: new Uint8Array(Buffer.from(serialText.slice(lineEnd + 1, end), 'base64')), end: end + GUEST_MARKERS.exchangeEnd.length };
}

/**
 * Listens on {@link hostPortSocketPath} for QEMU's connection of the guest's second serial port:
 * appends what arrives to `resultsPath`, and answers each exchange request with one line of
 * base64 (an empty line when the answer failed; `failure` then holds the error).
 */
async function listenToGuest(input: BootInput): Promise<{ failure: () => unknown; close: () => Promise<void> }> {
  const path = hostPortSocketPath(input.resultsPath);
  rmSync(path, { force: true });
  writeFileSync(input.resultsPath, '');
  let failure: unknown;
  let connection: Socket | undefined;
  const server = createServer((socket) => {
    connection = socket;
    let text = '';
    let scanned = 0;
    let answering = Promise.resolve();
    socket.on('data', (b: Buffer) => {
      try {
        appendFileSync(input.resultsPath, b);
      } catch (e) {
        // The caller gave up (and removed its folder) while QEMU still wrote: stop listening.
        failure ??= e;
        socket.destroy();
        return;
      }
      // Exchanges come before the results; past the results' marker only the results follow.
      if (text.includes(GUEST_MARKERS.begin)) return;
      text += b.toString('latin1');
      for (let r = extractExchange(text, scanned); r !== null; r = extractExchange(text, scanned)) {
        scanned = r.end;
        const request = r;
        answering = answering.then(async () => {
          let line = '';
          try {
            if (input.exchange === undefined) throw new GuestOutputError(input.resultsPath, `the guest asked for exchange '${request.step}', the host has no answer`);
            line = Buffer.from(await input.exchange(request.step, request.sent)).toString('base64');
          } catch (e) {
            failure ??= e;
          }
          socket.write(`${line}\n`);
        });
      }
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  return {
    failure: () => failure,
    close: () =>
      new Promise<void>((resolve) => {
        connection?.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * Boots the guest and waits for its results on the second serial port, then KILLS QEMU
 * (SIGKILL): a clean exit would make QEMU shut swtpm's TPM down and lose the PCRs the host
 * reads afterwards. QEMU is killed on every path, also on timeout and errors.
 */
export async function bootGuest(input: BootInput): Promise<BootOutcome> {
  const hostPort = await listenToGuest(input);
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
      const failure = hostPort.failure();
      if (failure !== undefined) throw failure;
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
    await hostPort.close();
  }
}
