/**
 * The one byte comparison of imakeep: digests, PCR values, names, nonces and keys are compared
 * with it everywhere (not `Buffer.equals`, `Buffer.compare` or a loop of each module's own). It
 * lives below `ima` and `tpm` so that both use it. Not constant-time: for secrets (a credential
 * answer) use `crypto.timingSafeEqual`.
 */

/** True if `a` and `b` hold the same bytes. A loop: digests are 20-64 bytes, where it beats a Buffer view. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
