/**
 * The machine a bench figure was measured on, written into every bench JSON (numbers are
 * published with the machine named). Read from the OS, never guessed.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, hostname, release, totalmem, type as osType } from 'node:os';

/** What the machine is and which versions of the tools measured against were installed. */
export interface MachineDescription {
  readonly hostname: string;
  readonly cpu: string;
  readonly cores: number;
  readonly memoryGiB: number;
  /** `Linux 6.18.44-...`: the host kernel (the emulator models 7.2; it is not this kernel). */
  readonly os: string;
  /** PRETTY_NAME of /etc/os-release. */
  readonly distribution: string;
  /** Virtualization guess from /proc/cpuinfo's `hypervisor` flag: the disk and timers are virtual. */
  readonly virtualMachine: boolean;
  readonly node: string;
  /** First line of `<tool> --version` for each tool asked for; `not installed` when it did not run. */
  readonly tools: Readonly<Record<string, string>>;
}

/** How each peer tool reports its version (tpm2-tools: any tpm2_* binary prints the package version). */
const VERSION_COMMANDS: Readonly<Record<string, readonly string[]>> = {
  swtpm: ['swtpm', '--version'],
  'tpm2-tools': ['tpm2_pcrread', '--version'],
  evmctl: ['evmctl', '--version'],
  fuse3: ['fusermount3', '--version'],
};

/** Tools every bench names unless told otherwise. */
export const PEER_TOOLS = Object.keys(VERSION_COMMANDS);

function firstLine(cmd: readonly string[]): string {
  const [file, ...args] = cmd;
  if (file === undefined) return 'not installed';
  try {
    const out = execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 5000 });
    return out.split('\n')[0]?.trim() || 'unknown';
  } catch {
    return 'not installed';
  }
}

function osRelease(): string {
  try {
    const m = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(readFileSync('/etc/os-release', 'utf8'));
    return m?.[1] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

function isVirtual(): boolean {
  try {
    return /^flags\s*:.*\bhypervisor\b/m.test(readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    return false;
  }
}

/** Describes this machine; `tools` names keys of the known version commands (default: all). */
export function describeMachine(tools: readonly string[] = PEER_TOOLS): MachineDescription {
  const cpuList = cpus();
  return {
    hostname: hostname(),
    cpu: cpuList[0]?.model ?? 'unknown',
    cores: cpuList.length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    os: `${osType()} ${release()}`,
    distribution: osRelease(),
    virtualMachine: isVirtual(),
    node: process.version,
    tools: Object.fromEntries(tools.map((t) => [t, firstLine(VERSION_COMMANDS[t] ?? [t, '--version'])])),
  };
}

/** One line for table headers and plot notes: `AMD EPYC, 2 cores (VM), 23.5 GiB, Linux 6.18, node v20.20.2`. */
export function machineLine(m: MachineDescription): string {
  return `${m.cpu}, ${m.cores} cores${m.virtualMachine ? ' (VM)' : ''}, ${m.memoryGiB} GiB, ${m.os}, node ${m.node}`;
}
