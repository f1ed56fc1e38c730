/**
 * The verifier's trust anchors: a directory of CA certificates (PEM, possibly several per file,
 * or DER), as Keylime's tenant reads `tpm_cert_store` (keylime/cert_utils.py `verify_ek`).
 */
import { X509Certificate } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { EnrollError } from './errors.js';

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The certificates in PEM text or DER bytes. */
export function parseCertificates(bytes: Uint8Array): X509Certificate[] {
  const text = Buffer.from(bytes).toString('latin1');
  const pems = text.match(PEM_CERTIFICATE);
  if (pems !== null) return pems.map((pem) => new X509Certificate(pem));
  return [new X509Certificate(bytes)];
}

/**
 * Every certificate in the files of `dir` ending in .pem, .crt, .cer or .der. Throws
 * `ENROLL_EK_CERT_CHAIN` (reason `unparsable`) naming a file that holds no certificate, or when the
 * directory holds none at all.
 */
export async function loadCaDirectory(dir: string): Promise<X509Certificate[]> {
  const names = (await readdir(dir)).filter((n) => /\.(pem|crt|cer|der)$/i.test(n)).sort();
  const out: X509Certificate[] = [];
  for (const name of names) {
    try {
      out.push(...parseCertificates(await readFile(join(dir, name))));
    } catch (e) {
      throw new EnrollError('ENROLL_EK_CERT_CHAIN', `${join(dir, name)} holds no X.509 certificate`, { reason: 'unparsable', field: name }, { cause: e });
    }
  }
  if (out.length === 0) throw new EnrollError('ENROLL_EK_CERT_CHAIN', `no CA certificate (.pem, .crt, .cer, .der) in ${dir}`, { reason: 'no-issuer' });
  return out;
}
