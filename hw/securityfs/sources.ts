/**
 * Where the emulator's records come from: a real kernel capture replayed, or the synthetic
 * workload of src/ima. Either way the first record's boot_aggregate is recomputed from the TPM's
 * own PCRs 0-9, so that the log verifies against that TPM (docs/ima-formats.md#boot_aggregate).
 */
import { readFileSync } from 'node:fs';
import { bootAggregate, parseBinaryList, splitTemplateData, type BankName, type ImaRecord } from '../../src/ima/index.js';
import type { Tpm } from '../../src/tpm/index.js';
import { digestNgField, makeRecord } from '../../src/testing/index.js';

const AGGREGATE_BANKS: readonly BankName[] = ['sha1', 'sha256', 'sha384', 'sha512'];

/** boot_aggregate of `bank` from the TPM's PCRs 0-9 (0-7 for sha1). */
export async function tpmBootAggregate(tpm: Tpm, bank: BankName): Promise<Uint8Array> {
  const count = bank === 'sha1' ? 8 : 10;
  const values = await tpm.pcrRead(Array.from({ length: count }, (_, pcr) => ({ bank, pcr })));
  return bootAggregate(
    values.map((v) => v.value),
    bank,
  );
}

/** The algorithm named by a d-ng field (`sha256:` + NUL + digest), or undefined. */
function digestAlgo(field: Uint8Array): BankName | undefined {
  const colon = field.indexOf(0x3a);
  const name = new TextDecoder('latin1').decode(field.subarray(0, colon));
  return AGGREGATE_BANKS.find((b) => b === name);
}

/**
 * `rec` with its d-ng digest replaced by `aggregate` if it is a `boot_aggregate` record of a d-ng
 * template (template digest recomputed); any other record unchanged.
 */
export function withBootAggregate(rec: ImaRecord, aggregateOf: (bank: BankName) => Uint8Array | undefined): ImaRecord {
  const fields = splitTemplateData(rec.template, rec.data, 'le');
  const [digestField, nameField] = fields ?? [];
  if (fields === null || digestField === undefined || nameField === undefined) return rec;
  if (new TextDecoder('latin1').decode(nameField) !== 'boot_aggregate\0') return rec;
  const bank = digestAlgo(digestField);
  const aggregate = bank === undefined ? undefined : aggregateOf(bank);
  if (bank === undefined || aggregate === undefined) return rec;
  return makeRecord(rec.template, [digestNgField(bank, aggregate), ...fields.slice(1)], { pcr: rec.pcr });
}

/** Records of a captured SHA-1 binary list (little-endian), e.g. `test/fixtures/real-kernel/<x>/log-a/binary_runtime_measurements`. */
export function readCapture(path: string): ImaRecord[] {
  return parseBinaryList(readFileSync(path));
}

/**
 * The capture's records with boot_aggregate recomputed from `tpm`'s PCRs, so that the replayed
 * log verifies against that TPM.
 */
export async function captureForTpm(path: string, tpm: Tpm): Promise<ImaRecord[]> {
  const records = readCapture(path);
  const first = records[0];
  if (first === undefined) return records;
  const aggregates = new Map<BankName, Uint8Array>();
  for (const bank of AGGREGATE_BANKS) {
    try {
      aggregates.set(bank, await tpmBootAggregate(tpm, bank));
    } catch {
      // bank not allocated in this TPM: a record naming it keeps its digest
    }
  }
  records[0] = withBootAggregate(first, (bank) => aggregates.get(bank));
  return records;
}
