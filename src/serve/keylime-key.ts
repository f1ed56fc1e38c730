/**
 * The Keylime payload key on disk. The agent's `pubkey` must stay the same across restarts: a
 * verifier that asks with `partial=1` checks PCR 16 against the key it cached (keylime
 * `cloud_verifier_common.process_quote_response`), so a key made anew at each start would fail
 * every such quote after a restart with `invalid_pcr_16`. The private key never leaves the device.
 */
import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { ServeError } from './errors.js';
import { payloadPublicPem } from './keylime.js';

/** RSA modulus of a new payload key (the agent's: rust-keylime `crypto::rsa_generate(2048)`). */
const PAYLOAD_KEY_BITS = 2048;

function readPayloadKey(path: string): KeyObject | undefined {
  let pem: string;
  try {
    pem = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ServeError('SERVE_BAD_PAYLOAD_KEY', `cannot read the payload key ${path}: ${(e as Error).message}`, {}, { cause: e });
  }
  try {
    return createPrivateKey(pem);
  } catch (e) {
    throw new ServeError('SERVE_BAD_PAYLOAD_KEY', `${path} is not a PEM private key: ${(e as Error).message}`, {}, { cause: e });
  }
}

/**
 * The payload key stored at `path` (PKCS#8 PEM), made (RSA 2048) and written with mode 0600 when
 * the file does not exist. Throws `SERVE_BAD_PAYLOAD_KEY` for a file that cannot be read or
 * written, or holds something other than an RSA private key.
 */
export function openPayloadKey(path: string): KeyObject {
  const existing = readPayloadKey(path);
  if (existing !== undefined) {
    payloadPublicPem(existing);
    return existing;
  }
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: PAYLOAD_KEY_BITS });
  try {
    // 'wx': never over a file another process wrote meanwhile.
    writeFileSync(path, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
  } catch (e) {
    throw new ServeError('SERVE_BAD_PAYLOAD_KEY', `cannot write the payload key ${path}: ${(e as Error).message}`, {}, { cause: e });
  }
  return privateKey;
}
