import { execFileSync, spawn } from 'node:child_process';
import { appendFileSync, closeSync, constants, openSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
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
   * connects that port to two FIFOs, `<resultsPath>.pipe.{in,out}`, so the host can also answer
   * (`exchange`).
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

/**
 * The FIFOs QEMU's `pipe` chardev connects the guest's second serial port to: `<base>.in` (host
 * to guest) and `<base>.out` (guest to host).
 */
export const hostPortPipeBase = (resultsPath: string): string => `${resultsPath}.pipe`;

/** QEMU arguments: q35 with TCG (KVM is unavailable here), a TIS TPM on swtpm, two serial ports. */
export function qemuArgs(input: BootInput): string[] {
  return [
    '-machine', 'q35,accel=tcg', '-cpu', 'max', '-smp', '1', '-m', String(input.memoryMiB),
    '-nodefaults', '-no-user-config', '-display', 'none', '-monitor', 'none', '-no-reboot', '-net', 'none',
    '-kernel', input.vmlinuz, '-initrd', input.initramfs, '-append', input.cmdline,
    '-chardev', `socket,id=chrtpm,path=${ctrlSocketPath(input.swtpmStateDir)}`,
    '-tpmdev', 'emulator,id=tpm0,chardev=chrtpm', '-device', 'tpm-tis,tpmdev=tpm0',
    '-chardev', `pipe,id=chrhost,path=${hostPortPipeBase(input.resultsPath)}`,
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

/** The host's end of the guest's second serial port (see {@link openHostPort}). */
interface HostPort {
  /** Bytes the guest wrote since the last call, or undefined. */
  take(): Buffer | undefined;
  /** Sends one line to the guest. */
  writeLine(line: string): void;
  close(): void;
}

/** Bytes one read of the guest's FIFO takes at most: a pipe's default capacity (pipe(7)). */
const PIPE_CAPACITY = 64 * 1024;

/**
 * Creates the two FIFOs of {@link hostPortPipeBase} and opens the host's ends: `.out` for reading
 * without blocking (the boot loop polls it), `.in` read-write so that opening it neither blocks nor
 * sees the guest's side closed. QEMU writes what the guest sends a byte at a time; a pipe merges
 * those writes into its pages (64 KiB of bytes buffered), where a unix socket queued one buffer per
 * byte (~250 bytes before QEMU's writes failed with EAGAIN), which held the results to ~20 KB/s.
 */
function openHostPort(base: string): HostPort {
  for (const end of ['in', 'out']) {
    rmSync(`${base}.${end}`, { force: true });
    execFileSync('mkfifo', [`${base}.${end}`]);
  }
  const fromGuest = openSync(`${base}.out`, constants.O_RDONLY | constants.O_NONBLOCK);
  const toGuest = openSync(`${base}.in`, constants.O_RDWR);
  const buffer = Buffer.allocUnsafe(PIPE_CAPACITY);
  return {
    take: () => {
      const parts: Buffer[] = [];
      for (;;) {
        let n: number;
        try {
          n = readSync(fromGuest, buffer, 0, buffer.length, null);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'EAGAIN') break;
          throw e;
        }
        // 0: no writer has the FIFO open (QEMU not started yet, or gone).
        if (n === 0) break;
        parts.push(Buffer.from(buffer.subarray(0, n)));
      }
      return parts.length === 0 ? undefined : Buffer.concat(parts);
    },
    writeLine: (line) => {
      writeSync(toGuest, `${line}\n`);
    },
    close: () => {
      closeSync(fromGuest);
      closeSync(toGuest);
    },
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
  const hostPort = openHostPort(hostPortPipeBase(input.resultsPath));
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
      // While bytes flow, take the next batch soon (the FIFO holds 64 KiB, see openHostPort).
      await sleep(fresh === undefined ? POLL_MS : FLOWING_POLL_MS);
    }
    throw new GuestTimeoutError(input.timeoutSeconds, consoleText.slice(-CONSOLE_TAIL));
  } finally {
    if (qemu.exitCode === null && qemu.signalCode === null) qemu.kill('SIGKILL');
    await exited;
    hostPort.close();
  }
}
