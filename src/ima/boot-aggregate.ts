/**
 * boot_aggregate: the digest in the first record, over the boot PCRs (docs/ima-formats.md#boot_aggregate,
 * `ima_calc_boot_aggregate_tfm()`): H_bank(PCR0 ‖ … ‖ PCR7), plus PCR8 ‖ PCR9 for every bank but
 * SHA-1.
 */
import { DIGEST_SIZE, type BankName } from './record.js';
import { ImaError } from './errors.js';
import { bankHash, concatBytes } from './hash.js';

/** boot_aggregate of one bank from its PCR values 0..9 (0..7 suffice for sha1). */
export function bootAggregate(pcrValues: readonly Uint8Array[], bank: BankName): Uint8Array {
  const count = bank === 'sha1' ? 8 : 10;
  const used = pcrValues.slice(0, count);
  if (used.length !== count || used.some((v) => v.length !== DIGEST_SIZE[bank])) {
    throw new ImaError('IMA_BAD_LENGTH', `boot_aggregate of ${bank} needs PCR 0..${count - 1} of ${DIGEST_SIZE[bank]} bytes each`);
  }
  return bankHash(bank, concatBytes(used));
}
