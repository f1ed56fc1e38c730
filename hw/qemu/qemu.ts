import { spawn } from 'node:child_process';
import { appendFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { GuestOutputError, GuestTimeoutError } from './errors.js';
import { GUEST_MARKERS } from './guest-init.js';
import { ctrlSocketPath } from './swtpm.js';

/** Kernel command line of the captures (real-kernel/README.md) plus what the harness adds:
 * `slab_nomerge` keeps IMA's kmalloc caches apart from other caches of the same size, so the slab
 * difference is attributed to the right cache (object sizes and counts do not change); `quiet`
 * saves console output under TCG (dmesg is still copied out); `panic=-1` with `-no-reboot` makes
 * a failed boot end QEMU at once; `no_timer_check` skips the boot-time check of the IO-APIC timer
 * interrupt (Documentation/admin-guide/kernel-parameters.txt), which a TCG guest on a loaded host
 * can fail ("IO-APIC + timer doesn't work!", a panic seen at a load average of 25 on 2 cores). */
export const DEFAULT_KERNEL_CMDLINE =
  'console=ttyS0 ima_policy=tcb ima_template=ima-ng ima_hash=sha256 rootfstype=ramfs slab_nomerge quiet panic=-1 no_timer_check';

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
const FLOWING_POLL_MS = 5;
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

/** The host's end of the guest's second serial port (see {@link listenToGuest}). */
interface HostPort {
  /** Bytes arrived since the last call (then reading resumes), or undefined. */
  take(): Buffer | undefined;
  /** Sends one line to the guest. */
  writeLine(line: string): void;
  close(): Promise<void>;
}

/**
 * Listens on {@link hostPortSocketPath} for QEMU's connection of the guest's second serial port.
 * QEMU sends what the guest writes a byte or a few at a time: reading pauses after each arrival
 * until the boot loop takes the bytes, so they come in socket-buffer batches rather than one
 * JavaScript callback per few bytes (which, on a loaded machine, throttled the results to tens
 * of KB/s).
 */
async function listenToGuest(path: string): Promise<HostPort> {
  rmSync(path, { force: true });
  const chunks: Buffer[] = [];
  let connection: Socket | undefined;
  const server = createServer((socket) => {
    connection = socket;
    socket.on('data', (b: Buffer) => {
      chunks.push(b);
      socket.pause();
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  return {
    take: () => {
      if (chunks.length === 0) return undefined;
      const bytes = Buffer.concat(chunks.splice(0));
      connection?.resume();
      return bytes;
    },
    writeLine: (line) => connection?.write(`${line}\n`),
    close: () =>
      new Promise<void>((resolve) => {
        connection?.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * Answers the exchange request `request` (guest-init.ts): one line of base64, empty when the host
 * has no answer; the error is thrown after the guest got its line.
 */
async function answerExchange(input: BootInput, port: HostPort, request: ExchangeRequest): Promise<void> {
  let answer: Uint8Array | undefined;
  let failure: unknown;
  try {
    if (input.exchange === undefined) throw new GuestOutputError(input.resultsPath, `the guest asked for exchange '${request.step}', the host has no answer`);
    answer = await input.exchange(request.step, request.sent);
  } catch (e) {
    failure = e;
  }
  port.writeLine(answer === undefined ? '' : Buffer.from(answer).toString('base64'));
  if (failure !== undefined) throw failure;
}

/**
 * Boots the guest and waits for its results on the second serial port, then KILLS QEMU
 * (SIGKILL): a clean exit would make QEMU shut swtpm's TPM down and lose the PCRs the host
 * reads afterwards. QEMU is killed on every path, also on timeout and errors.
 */
export async function bootGuest(input: BootInput): Promise<BootOutcome> {
  const hostPort = await listenToGuest(hostPortSocketPath(input.resultsPath));
  writeFileSync(input.resultsPath, '');
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
    let serial = '';
    let scanned = 0;
    while (elapsed() < input.timeoutSeconds) {
      if (qemu.exitCode !== null || qemu.signalCode !== null) {
        throw new GuestOutputError(input.resultsPath, `QEMU exited (${String(qemu.exitCode ?? qemu.signalCode)}) before the results; console:\n${consoleText.slice(-CONSOLE_TAIL)}`);
      }
      const fresh = hostPort.take();
      if (fresh !== undefined) {
        appendFileSync(input.resultsPath, fresh);
        serial += fresh.toString('latin1');
        // Exchanges come before the results (the guest waits for each answer).
        for (let r = extractExchange(serial, scanned); r !== null; r = extractExchange(serial, scanned)) {
          scanned = r.end;
          await answerExchange(input, hostPort, r);
        }
        // Only the new bytes (and a marker's length before them) can complete the end marker.
        const ended = serial.includes(GUEST_MARKERS.end, serial.length - fresh.length - GUEST_MARKERS.end.length);
        const results = ended ? extractResults(serial) : null;
        if (results !== null) return { stages, console: consoleText, resultsBase64: results, hostSeconds: elapsed() };
      }
      // While bytes flow, take the next batch soon (one socket read per take, see listenToGuest).
      await sleep(fresh === undefined ? POLL_MS : FLOWING_POLL_MS);
    }
    throw new GuestTimeoutError(input.timeoutSeconds, consoleText.slice(-CONSOLE_TAIL));
  } finally {
    if (qemu.exitCode === null && qemu.signalCode === null) qemu.kill('SIGKILL');
    await exited;
    await hostPort.close();
  }
}
