/** The real-kernel captures (test/fixtures/real-kernel, see its README) as bytes and values. */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { toHex, type BankName, type ParsedRecord } from '../../src/ima/index.js';

/** Repository root (tests run from dist/test/ima/). */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** Folder of the captures. */
export const FIXTURES = `${REPO_ROOT}test/fixtures/real-kernel`;

/** Names of the captures. */
export const CAPTURES = ['short-ima-ng', 'violations-ima-sig', 'keys-ima-ng'] as const;

/** One capture's files. */
export interface Capture {
  readonly name: string;
  readonly dir: string;
  readonly binary: Uint8Array;
  readonly ascii: Uint8Array;
  readonly count: number;
  readonly violations: number;
  /** `banks.<bank>.<index>` = hex, from pcrs.json. */
  readonly pcrs: Readonly<Partial<Record<BankName, Readonly<Record<string, string>>>>>;
}

/** Loads a capture. */
export function loadCapture(name: string): Capture {
  const dir = `${FIXTURES}/${name}`;
  const log = (f: string) => new Uint8Array(readFileSync(`${dir}/log-a/${f}`));
  const json: unknown = JSON.parse(readFileSync(`${dir}/pcrs.json`, 'utf8'));
  const pcrs = typeof json === 'object' && json !== null && 'banks' in json && typeof json.banks === 'object' && json.banks !== null ? json.banks : {};
  return {
    name,
    dir,
    binary: log('binary_runtime_measurements'),
    ascii: log('ascii_runtime_measurements'),
    count: Number(readFileSync(`${dir}/log-a/runtime_measurements_count`, 'utf8')),
    violations: Number(readFileSync(`${dir}/log-a/violations`, 'utf8')),
    pcrs,
  };
}

/** All captures. */
export function allCaptures(): Capture[] {
  return CAPTURES.map(loadCapture);
}

/** PCR value of a capture as bytes. */
export function pcrBytes(c: Capture, bank: BankName, index: number): Uint8Array {
  const hex = c.pcrs[bank]?.[String(index)];
  if (hex === undefined) throw new Error(`${c.name}: no ${bank} PCR ${index}`);
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

/** Records as hex strings, comparable with deepEqual whatever their backing buffers. */
export function recordsAsHex(records: readonly ParsedRecord[]): string[] {
  return records.map((r) => `${r.pcr} ${toHex(r.digest)} ${r.template} ${toHex(r.data)}`);
}
