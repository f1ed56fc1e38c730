/**
 * The PCR banks, by name: the vocabulary the IMA log (a digest per bank, extended into PCR 10 of
 * every bank) and the TPM (a PCR bank per hash algorithm) share. It lives below both so that
 * neither imports the other.
 */

/** PCR banks imakeep replays and quotes (TPM_ALG_SHA1/256/384/512). */
export type BankName = 'sha1' | 'sha256' | 'sha384' | 'sha512';

export const BANKS: readonly BankName[] = ['sha1', 'sha256', 'sha384', 'sha512'];

/** Digest size in bytes of each bank (TCG Algorithm Registry). */
export const DIGEST_SIZE: Readonly<Record<BankName, number>> = {
  sha1: 20,
  sha256: 32,
  sha384: 48,
  sha512: 64,
};
