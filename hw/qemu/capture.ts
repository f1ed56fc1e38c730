import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GuestOutputError } from './errors.js';
import { runTool } from './exec.js';
import { flavoursFromModes, parseStatModes, type RemovalFlavour } from './probe.js';
import { calibrateSlab, parseMeminfo, parseSlabinfo, type SlabCalibration, type SlabSnapshot } from './slab.js';
import { parseEvmctlPcrs, type PcrBanks } from './swtpm.js';

/** A node command's outcome in the guest. */
export interface GuestNodeResult {
  name: string;
  status: number;
  stdout: string;
  stderr: string;
  /** The PCRs the guest read right before this run. */
  pcrFiles: Record<string, string>;
}

/** Everything the guest sent back, unpacked into `dir`. */
export interface GuestResults {
  dir: string;
  binaryLog: string;
  asciiLog: string;
  records: number;
  violations: number;
  /** `pcr-<bank>.txt` files read right before and right after copying the log. */
  pcrFilesBefore: Record<string, string>;
  pcrsBefore: PcrBanks;
  pcrsAfter: PcrBanks;
  securityfsModes: ReadonlyMap<string, number>;
  flavours: RemovalFlavour[];
  slabRounds: SlabCalibration[];
  /** Guest uptime (s) per stage. */
  guestUptime: Record<string, number>;
  nodeSteps: GuestNodeResult[];
  kernelRelease: string;
  kernelCmdline: string;
}

/** Decodes the base64 `tar.gz` of the guest's /out into `dir` (created); keeps the archive as `<dir>.tar.gz`. */
export async function unpackResults(base64: string, dir: string): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const archive = `${dir}.tar.gz`;
  // Buffer's base64 decoder skips the CR/LF the guest's tty adds.
  writeFileSync(archive, Buffer.from(base64, 'base64'));
  await runTool('tar', ['-xzf', archive, '-C', dir]);
}

function text(dir: string, rel: string): string {
  const path = join(dir, rel);
  if (!existsSync(path)) throw new GuestOutputError(path, 'missing from the guest results');
  return readFileSync(path, 'utf8');
}

function counter(dir: string, rel: string): number {
  const value = Number(text(dir, rel).trim());
  if (!Number.isSafeInteger(value)) throw new GuestOutputError(join(dir, rel), 'is not an integer');
  return value;
}

function pcrFiles(dir: string): Record<string, string> {
  const files: Record<string, string> = {};
  for (const name of readdirSync(dir)) {
    const m = /^pcr-(\w+)\.txt$/.exec(name);
    if (m?.[1] !== undefined) files[m[1]] = join(dir, name);
  }
  return files;
}

function readPcrs(files: Record<string, string>): PcrBanks {
  return Object.fromEntries(Object.entries(files).map(([bank, path]) => [bank, parseEvmctlPcrs(readFileSync(path, 'utf8'))]));
}

function slabSnapshot(dir: string, prefix: string): SlabSnapshot {
  return {
    caches: parseSlabinfo(text(dir, `${prefix}.slabinfo`)),
    meminfoKb: parseMeminfo(text(dir, `${prefix}.meminfo`)),
    records: counter(dir, `${prefix}.count`),
  };
}

/** Reads the unpacked results of a guest that ran `slabRounds` rounds and the named node steps. */
export function loadGuestResults(dir: string, slabRounds: number, nodeStepNames: readonly string[]): GuestResults {
  const modes = parseStatModes(text(dir, 'probe/securityfs-modes.txt'));
  const before = pcrFiles(join(dir, 'pcrs-before'));
  const guestUptime: Record<string, number> = {};
  for (const line of text(dir, 'timings.txt').split('\n')) {
    const [name, up] = line.split(' ');
    if (name !== undefined && up !== undefined) guestUptime[name] = Number(up);
  }
  return {
    dir,
    binaryLog: join(dir, 'log', 'binary_runtime_measurements'),
    asciiLog: join(dir, 'log', 'ascii_runtime_measurements'),
    records: counter(dir, 'log/runtime_measurements_count'),
    violations: counter(dir, 'log/violations'),
    pcrFilesBefore: before,
    pcrsBefore: readPcrs(before),
    pcrsAfter: readPcrs(pcrFiles(join(dir, 'pcrs-after'))),
    securityfsModes: modes,
    flavours: flavoursFromModes(modes),
    slabRounds: Array.from({ length: slabRounds }, (_, i) =>
      calibrateSlab(slabSnapshot(dir, `slab/${i + 1}.before`), slabSnapshot(dir, `slab/${i + 1}.after`)),
    ),
    guestUptime,
    nodeSteps: nodeStepNames.map((name) => ({
      name,
      status: counter(dir, `node-${name}/status`),
      stdout: text(dir, `node-${name}/stdout`),
      stderr: text(dir, `node-${name}/stderr`),
      pcrFiles: pcrFiles(join(dir, `node-${name}`, 'pcrs')),
    })),
    kernelRelease: text(dir, 'uname.txt').trim(),
    kernelCmdline: text(dir, 'cmdline.txt').trim(),
  };
}
