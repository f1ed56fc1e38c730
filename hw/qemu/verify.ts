import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runTool, runToolForStatus } from './exec.js';
import { formatEvmctlPcrs, type PcrBanks } from './swtpm.js';

/** One verification of the fetched log against one set of PCR values. */
export interface LogCheck {
  tool: 'evmctl' | 'imakeep';
  /** Where the PCR values came from: guest sysfs, or tpm2_pcrread on the host after the VM stopped. */
  pcrSource: 'guest' | 'host';
  ok: boolean;
  command: string[];
  output: string;
}

/** Writes `pcr-<bank>.txt` (evmctl format) for every bank into `dir`; returns bank → path. */
export function writePcrFiles(banks: PcrBanks, dir: string): Record<string, string> {
  mkdirSync(dir, { recursive: true });
  const files: Record<string, string> = {};
  for (const [bank, values] of Object.entries(banks)) {
    files[bank] = join(dir, `pcr-${bank}.txt`);
    writeFileSync(files[bank], formatEvmctlPcrs(values));
  }
  return files;
}

async function check(tool: LogCheck['tool'], pcrSource: LogCheck['pcrSource'], file: string, args: string[]): Promise<LogCheck> {
  const r = await runToolForStatus(file, args);
  return { tool, pcrSource, ok: r.status === 0, command: [file, ...args], output: `${r.stdout}${r.stderr}`.trim() };
}

/**
 * `evmctl ima_measurement --ignore-violations --pcrs sha1,F --pcrs sha256,F LOG`: ima-evm-utils
 * replays the SHA-1 list into every given bank and compares PCR 10 (and the boot_aggregate).
 */
export function evmctlCheck(pcrSource: LogCheck['pcrSource'], binaryLog: string, pcrFiles: Record<string, string>): Promise<LogCheck> {
  const pcrs = Object.entries(pcrFiles).flatMap(([bank, path]) => ['--pcrs', `${bank},${path}`]);
  return check('evmctl', pcrSource, 'evmctl', ['ima_measurement', '--ignore-violations', ...pcrs, binaryLog]);
}

/** Path of the project's CLI in a build, or null when the `replay` verb is not built yet. */
export function builtReplayCli(projectRoot: string): string | null {
  const cli = join(projectRoot, 'dist', 'src', 'cli.js');
  return existsSync(cli) && existsSync(join(projectRoot, 'dist', 'src', 'cli', 'replay.js')) ? cli : null;
}

/** Arguments of `imakeep replay` checking a SHA-1 list against PCR files (one `--expect` per bank). */
export function replayArgs(binaryLog: string, pcrFiles: Record<string, string>): string[] {
  return ['replay', binaryLog, ...Object.values(pcrFiles).flatMap((path) => ['--expect', path])];
}

/** `imakeep replay LOG --expect F...` with the project's own CLI on the host. */
export function imakeepReplayCheck(cli: string, pcrSource: LogCheck['pcrSource'], binaryLog: string, pcrFiles: Record<string, string>): Promise<LogCheck> {
  return check('imakeep', pcrSource, process.execPath, [cli, ...replayArgs(binaryLog, pcrFiles)]);
}

/** Whether `imakeep convert` re-encodes the kernel's list byte for byte. */
export interface FormatCheck {
  /** `ascii`: binary list → ASCII list; `binary`: binary list → binary list. */
  to: 'ascii' | 'binary';
  ok: boolean;
  /** Offset of the first differing byte, or -1 when equal. */
  firstDifference: number;
}

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/**
 * `imakeep convert LOG --to ascii|binary` on the host, compared with the kernel's own ASCII list
 * and the binary list it came from (6.1's binary list is the SHA-1 one convert writes).
 */
export async function imakeepConvertChecks(cli: string, binaryLog: string, asciiLog: string): Promise<FormatCheck[]> {
  const checks: FormatCheck[] = [];
  for (const [to, expectedPath] of [['ascii', asciiLog], ['binary', binaryLog]] as const) {
    const { stdout } = await runTool(process.execPath, [cli, 'convert', binaryLog, '--to', to], { encoding: 'latin1' });
    const diff = firstDifference(Buffer.from(stdout, 'latin1'), readFileSync(expectedPath));
    checks.push({ to, ok: diff === -1, firstDifference: diff });
  }
  return checks;
}

/**
 * The AK public key (SPKI PEM, `<outDir>/ak.pem`) recreated from the guest's TPM after the VM
 * stopped: `imakeep tpm quote` on the stored swtpm makes the same ECC primary in the endorsement
 * hierarchy as the collector (same template, same seed: the same key, docs/tpm.md#the-attestation-key), so a
 * bundle verified with it is trusted through the TPM, not through the AK the bundle carries.
 */
export async function recreateAkPem(cli: string, swtpmPort: number, outDir: string): Promise<string> {
  await runTool(process.execPath, [cli, 'tpm', 'quote', '--tpm', `swtpm:127.0.0.1:${swtpmPort}`, '--nonce', '00', '--ak', 'ecc', '--out', outDir]);
  return join(outDir, 'ak.pem');
}

/** `imakeep verify BUNDLE (--ak PEM | --enrollment FILE)` on the host, and the counts its summary line reports. */
export interface BundleCheck {
  ok: boolean;
  command: string[];
  output: string;
  /** From `OK: B bundles, R records, C checkpoints verified; AK trusted`, or null when absent. */
  verified: { bundles: number; records: number; checkpoints: number; akTrusted: boolean } | null;
}

/** Runs `imakeep verify BUNDLE TRUST...` with the project's CLI on the host (`trust`: `--ak PEM` or `--enrollment FILE`). */
export async function imakeepVerifyBundleCheck(cli: string, bundle: string, trust: readonly string[]): Promise<BundleCheck> {
  const args = [cli, 'verify', bundle, ...trust];
  const r = await runToolForStatus(process.execPath, args);
  const output = `${r.stdout}${r.stderr}`.trim();
  const m = /^OK: (\d+) bundles, (\d+) records, (\d+) checkpoints verified; AK (trusted|taken)/m.exec(output);
  return {
    ok: r.status === 0,
    command: [process.execPath, ...args],
    output,
    verified: m === null ? null : { bundles: Number(m[1]), records: Number(m[2]), checkpoints: Number(m[3]), akTrusted: m[4] === 'trusted' },
  };
}
