import { ImakeepError } from '../../src/errors.js';

/**
 * Errors of the QEMU real-kernel harness (`hw/qemu`). Codes:
 * - `QEMU_TOOL_FAILED`: a host program (apt-get, dpkg-deb, qemu, swtpm, tpm2_pcrread, ...) failed;
 *   carries the command line, exit status and the tail of its stderr.
 * - `QEMU_KERNEL_PACKAGE`: the kernel package cannot be named, downloaded or has no bzImage.
 * - `QEMU_KERNEL_CONFIG`: the kernel lacks a built-in option the harness needs (IMA, TCG_TIS).
 * - `QEMU_GUEST_TIMEOUT`: the guest did not finish within the time limit; carries the console tail.
 * - `QEMU_GUEST_OUTPUT`: the guest's result stream or one of its files is missing or malformed.
 */
export class QemuHarnessError extends ImakeepError {}

/** A host program exited non-zero or could not be started. */
export class QemuToolError extends QemuHarnessError {
  readonly command: readonly string[];
  readonly exitStatus: number | null;
  readonly stderrTail: string;

  constructor(command: readonly string[], exitStatus: number | null, stderrTail: string, options?: { cause?: unknown }) {
    super('QEMU_TOOL_FAILED', `${command.join(' ')} failed (exit ${String(exitStatus)}): ${stderrTail}`, options);
    this.command = command;
    this.exitStatus = exitStatus;
    this.stderrTail = stderrTail;
  }
}

/** The Debian kernel package cannot be named, downloaded, or holds no `/boot/vmlinuz-*`. */
export class KernelPackageError extends QemuHarnessError {
  readonly debianPackage: string;

  constructor(debianPackage: string, message: string) {
    super('QEMU_KERNEL_PACKAGE', `${debianPackage}: ${message}`);
    this.debianPackage = debianPackage;
  }
}

/** The kernel's config file does not have every option the harness relies on set to `y`. */
export class KernelConfigError extends QemuHarnessError {
  readonly configPath: string;
  readonly missing: readonly string[];

  constructor(configPath: string, missing: readonly string[]) {
    super('QEMU_KERNEL_CONFIG', `${configPath}: needs ${missing.map((o) => `${o}=y`).join(', ')}`);
    this.configPath = configPath;
    this.missing = missing;
  }
}

/** The guest did not write its end marker in time. */
export class GuestTimeoutError extends QemuHarnessError {
  readonly seconds: number;
  readonly consoleTail: string;

  constructor(seconds: number, consoleTail: string) {
    super('QEMU_GUEST_TIMEOUT', `guest did not finish within ${seconds} s; console ends with:\n${consoleTail}`);
    this.seconds = seconds;
    this.consoleTail = consoleTail;
  }
}

/** The guest's result stream, or a file in it, is missing or malformed. */
export class GuestOutputError extends QemuHarnessError {
  readonly file: string;

  constructor(file: string, message: string) {
    super('QEMU_GUEST_OUTPUT', `${file}: ${message}`);
    this.file = file;
  }
}
