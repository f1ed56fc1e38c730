/**
 * What a verifier checks before it challenges a device: that the AK is a restricted signing key
 * bound to its TPM (its public area), and that the EK is certified by a CA it trusts (the
 * certificate chain, with `node:crypto` X509Certificate) and is the key the certificate names.
 */
import { X509Certificate } from 'node:crypto';
import { bytesEqual } from '../base/bytes.js';
import { TPM_ALG, type TpmPublic, ekTemplateOf, parseTpm2bPublic, publicKeyFromTpmPublic, tpmName, type EkTemplate } from '../tpm/index.js';
import { EnrollError } from './errors.js';

/** TPMA_OBJECT bits an AK must have (Part 2 §8.3): a key that never leaves this TPM, made in it, usable only to sign TPM-made data. */
const AK_REQUIRED: readonly (readonly [string, number])[] = [
  ['fixedTPM', 0x2],
  ['fixedParent', 0x10],
  ['sensitiveDataOrigin', 0x20],
  ['userWithAuth', 0x40],
  ['restricted', 0x10000],
  ['sign', 0x40000],
];
/** TPMA_OBJECT bits an AK must not have: a restricted key that also decrypts is a storage key. */
const AK_FORBIDDEN: readonly (readonly [string, number])[] = [['decrypt', 0x20000]];

/** What a verifier accepts as an AK's name algorithm and signing scheme. */
export interface AkPolicy {
  /** Default SHA-256: the quotes' nonce size and the Name's hash. */
  readonly nameAlgs?: readonly number[];
  /** Default ECDSA, RSASSA and RSAPSS. */
  readonly schemes?: readonly number[];
  /** Default SHA-256, SHA-384. */
  readonly schemeHashes?: readonly number[];
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/**
 * Parses and checks an AK's `TPM2B_PUBLIC` and its claimed Name. Throws `ENROLL_AK_ATTRIBUTES`
 * naming every missing and forbidden attribute and every other problem, or `ENROLL_BAD_FILE` when
 * the bytes do not parse or the Name is not the public area's.
 */
export function checkAkPublic(akPublic: Uint8Array, akName: Uint8Array, policy: AkPolicy = {}): TpmPublic {
  let pub: TpmPublic;
  try {
    pub = parseTpm2bPublic(akPublic);
  } catch (e) {
    throw new EnrollError('ENROLL_BAD_FILE', `aik_tpm is not a TPM2B_PUBLIC: ${e instanceof Error ? e.message : String(e)}`, { field: 'aik_tpm' }, { cause: e });
  }
  const missing = AK_REQUIRED.filter(([, bit]) => (pub.attributes & bit) === 0).map(([name]) => name);
  const forbidden = AK_FORBIDDEN.filter(([, bit]) => (pub.attributes & bit) !== 0).map(([name]) => name);
  const problems: string[] = [];
  const nameAlgs = policy.nameAlgs ?? [TPM_ALG.SHA256];
  if (!nameAlgs.includes(pub.nameAlg)) problems.push(`nameAlg 0x${pub.nameAlg.toString(16)}`);
  const schemes = policy.schemes ?? [TPM_ALG.ECDSA, TPM_ALG.RSASSA, TPM_ALG.RSAPSS];
  const hashes = policy.schemeHashes ?? [TPM_ALG.SHA256, TPM_ALG.SHA384];
  if (pub.scheme === null) problems.push('no signing scheme');
  else if (!schemes.includes(pub.scheme.alg) || !hashes.includes(pub.scheme.hashAlg)) {
    problems.push(`scheme 0x${pub.scheme.alg.toString(16)} with hash 0x${pub.scheme.hashAlg.toString(16)}`);
  }
  if (pub.type === 'rsa' && pub.keyBits < 2048) problems.push(`RSA key of ${pub.keyBits} bits`);
  if (missing.length > 0 || forbidden.length > 0 || problems.length > 0) {
    const what = [...missing.map((m) => `lacks ${m}`), ...forbidden.map((f) => `has ${f}`), ...problems].join(', ');
    throw new EnrollError('ENROLL_AK_ATTRIBUTES', `the AK is not a restricted signing key as expected: ${what}`, {
      attributes: pub.attributes,
      missing,
      forbidden,
      problems,
    });
  }
  const name = tpmName(pub);
  if (hex(name) !== hex(akName)) {
    throw new EnrollError('ENROLL_BAD_FILE', 'ak_name is not the Name of aik_tpm', { field: 'ak_name', expected: hex(name), actual: hex(akName) });
  }
  return pub;
}

/** Longest chain followed from an EK certificate to a trust anchor. */
const MAX_CHAIN = 8;

function parseCertificate(der: Uint8Array, what: string): X509Certificate {
  try {
    return new X509Certificate(der);
  } catch (e) {
    throw new EnrollError('ENROLL_EK_CERT_CHAIN', `${what} does not parse as X.509: ${e instanceof Error ? e.message : String(e)}`, { reason: 'unparsable' }, { cause: e });
  }
}

function checkValidity(cert: X509Certificate, now: Date): void {
  const reason = now < new Date(cert.validFrom) ? 'not-yet-valid' : now > new Date(cert.validTo) ? 'expired' : undefined;
  if (reason !== undefined) {
    throw new EnrollError('ENROLL_EK_CERT_CHAIN', `${cert.subject || '(empty subject)'} is ${reason} (valid ${cert.validFrom} to ${cert.validTo})`, {
      reason,
      subject: cert.subject,
      issuer: cert.issuer,
    });
  }
}

/**
 * Follows the EK certificate up to one of `anchors` (the verifier's CA directory), through the
 * intermediates the TPM holds (`chain`): each link's issuer named and signature verified
 * (`checkIssued`, `verify`), each issuer a CA, every certificate valid at `now`. Returns the path
 * from the EK certificate to the anchor. Throws `ENROLL_EK_CERT_CHAIN` with the certificate it
 * stopped at.
 */
export function verifyEkCertificateChain(
  ekCertificate: Uint8Array,
  chain: readonly Uint8Array[],
  anchors: readonly X509Certificate[],
  now: Date,
): X509Certificate[] {
  const leaf = parseCertificate(ekCertificate, 'the EK certificate');
  const intermediates = chain.map((der, i) => parseCertificate(der, `chain certificate ${i}`));
  const isAnchor = (c: X509Certificate): boolean => anchors.some((a) => bytesEqual(a.raw, c.raw));
  const path = [leaf];
  for (let current = leaf; path.length <= MAX_CHAIN; ) {
    checkValidity(current, now);
    if (isAnchor(current)) return path;
    const issuer = [...intermediates, ...anchors].find((c) => c.ca && current.checkIssued(c) && current.verify(c.publicKey));
    if (issuer === undefined) {
      throw new EnrollError('ENROLL_EK_CERT_CHAIN', `no trusted CA issued ${current.subject || '(empty subject)'} (issuer ${current.issuer})`, {
        reason: 'no-issuer',
        subject: current.subject,
        issuer: current.issuer,
      });
    }
    path.push(issuer);
    current = issuer;
  }
  throw new EnrollError('ENROLL_EK_CERT_CHAIN', `no trust anchor within ${MAX_CHAIN} certificates`, { reason: 'too-long', subject: leaf.subject, issuer: leaf.issuer });
}

/**
 * Checks that `ekPublic` (a `TPM2B_PUBLIC`) was made from a TCG EK template (the one named, when
 * given) and is the key `certificate` certifies. Throws `ENROLL_EK_MISMATCH`.
 */
export function checkEkMatchesCertificate(ekPublic: Uint8Array, certificate: X509Certificate, templateName?: string): { readonly ek: TpmPublic; readonly template: EkTemplate } {
  let ek: TpmPublic;
  try {
    ek = parseTpm2bPublic(ekPublic);
  } catch (e) {
    throw new EnrollError('ENROLL_BAD_FILE', `ek_tpm is not a TPM2B_PUBLIC: ${e instanceof Error ? e.message : String(e)}`, { field: 'ek_tpm' }, { cause: e });
  }
  const template = ekTemplateOf(ek.bytes);
  if (template === undefined || (templateName !== undefined && template.name !== templateName)) {
    throw new EnrollError('ENROLL_EK_MISMATCH', `ek_tpm is not made from the TCG EK template ${templateName ?? ''}`.trim(), {
      template: templateName ?? '',
      actual: template?.name ?? 'none',
    });
  }
  const fromTpm = JSON.stringify(publicKeyFromTpmPublic(ek).export({ format: 'jwk' }));
  const fromCert = JSON.stringify(certificate.publicKey.export({ format: 'jwk' }));
  if (fromTpm !== fromCert) {
    throw new EnrollError('ENROLL_EK_MISMATCH', `the EK (${template.name}) is not the key of its certificate (${certificate.subject || certificate.serialNumber})`, {
      template: template.name,
      subject: certificate.subject,
    });
  }
  return { ek, template };
}
