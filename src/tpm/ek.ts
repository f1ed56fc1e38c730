/**
 * Endorsement keys: the TCG default EK templates, the NV indices of their certificates, and the EK
 * recreated from its template under the endorsement hierarchy (TCG EK Credential Profile for TPM
 * Family 2.0, §2.2.1 "EK Templates" and §2.2.1.4/2.2.1.5 "Low Range" and "High Range" NV indices).
 *
 * The low-range templates L-1 (RSA 2048) and L-2 (ECC NIST P-256) carry PolicyA =
 * PolicySecret(TPM_RH_ENDORSEMENT) as authPolicy and a zero-filled `unique`; the high-range
 * templates H-1..H-7 carry PolicyB = PolicyOR(PolicyA, PolicyC), where PolicyC =
 * PolicyAuthorizeNV(the policy index I-n of the same hash), userWithAuth set and an empty `unique`.
 * swtpm_setup writes an L-1 RSA EK certificate at 0x01C00002 and an H-3 ECC NIST P-384 EK
 * certificate at 0x01C00016.
 */
import { bytesEqual } from '../base/bytes.js';
import { CreatePrimary } from './commands.js';
import { TPM_ALG, TPM_ECC, TPM_RH } from './constants.js';
import { TpmWriter } from './marshal.js';
import { nvIndices, nvName, readNv, splitDer } from './nv.js';
import { type PolicyStep, hashOfAlg, policyAuthorizeNvDigest, policyOrDigest, policySecretDigest } from './session.js';
import type { Tpm } from './tpm.js';

/** Names of the EK templates of the EK Credential Profile this client knows (H-5, SM2, is left out). */
export type EkTemplateName = 'L-1' | 'L-2' | 'H-1' | 'H-2' | 'H-3' | 'H-4' | 'H-6' | 'H-7';

/** One EK template, as the TPMT_PUBLIC bytes given to CreatePrimary and the facts derived from it. */
export interface EkTemplate {
  readonly name: EkTemplateName;
  /** NV index of its EK certificate. */
  readonly certIndex: number;
  readonly type: 'rsa' | 'ecc';
  readonly nameAlg: number;
  /** `TPMT_PUBLIC` template bytes. */
  readonly bytes: Uint8Array;
  /** Length of the part of `bytes` before `unique`: an EK made from this template starts with exactly these bytes. */
  readonly parametersLength: number;
  /** The assertions that satisfy its authPolicy in a policy session of hash `nameAlg`. */
  readonly policy: readonly PolicyStep[];
}

/** TPMA_OBJECT of the low-range templates: fixedTPM, fixedParent, sensitiveDataOrigin, adminWithPolicy, restricted, decrypt. */
const ATTRIBUTES_LOW = 0x000300b2;
/** High range: the same plus userWithAuth. */
const ATTRIBUTES_HIGH = ATTRIBUTES_LOW | 0x40;

/** The Name of TPM_RH_ENDORSEMENT, a permanent handle: the handle itself (Part 1 §16). */
const ENDORSEMENT_NAME = new Uint8Array([0x40, 0x00, 0x00, 0x0b]);

/** PolicyA of hash `alg`: PolicySecret(TPM_RH_ENDORSEMENT). */
export function ekPolicyA(alg: number): Uint8Array {
  return policySecretDigest(alg, ENDORSEMENT_NAME);
}

/** The policy index I-n of each hash (EK Credential Profile "Policy Index" handles). */
const POLICY_INDEX: ReadonlyMap<number, number> = new Map([
  [TPM_ALG.SHA256, 0x01c07f01],
  [TPM_ALG.SHA384, 0x01c07f02],
  [TPM_ALG.SHA512, 0x01c07f03],
]);

/**
 * PolicyC of hash `alg`: PolicyAuthorizeNV(policy index I-n), whose Name follows from the index's
 * public area fixed by the profile: TPMA_NV policyWrite | writeAll | ppRead | ownerRead | authRead
 * | policyRead | noDA | written (0x220F1008), authPolicy PolicyA, dataSize = digest size + 2.
 */
export function ekPolicyC(alg: number): Uint8Array {
  const nvIndex = POLICY_INDEX.get(alg) ?? 0;
  const name = nvName({ nvIndex, nameAlg: alg, attributes: 0x220f1008, authPolicy: ekPolicyA(alg), dataSize: hashOfAlg(alg).size + 2 });
  return policyAuthorizeNvDigest(alg, name);
}

/** PolicyB of hash `alg`: PolicyOR(PolicyA, PolicyC), the authPolicy of the high-range templates. */
export function ekPolicyB(alg: number): Uint8Array {
  return policyOrDigest(alg, [ekPolicyA(alg), ekPolicyC(alg)]);
}

interface TemplateSpec {
  readonly name: EkTemplateName;
  readonly certIndex: number;
  readonly type: 'rsa' | 'ecc';
  readonly nameAlg: number;
  readonly symKeyBits: 128 | 256;
  /** RSA key bits or TPM_ECC_CURVE. */
  readonly size: number;
}

const SPECS: readonly TemplateSpec[] = [
  { name: 'L-1', certIndex: 0x01c00002, type: 'rsa', nameAlg: TPM_ALG.SHA256, symKeyBits: 128, size: 2048 },
  { name: 'L-2', certIndex: 0x01c0000a, type: 'ecc', nameAlg: TPM_ALG.SHA256, symKeyBits: 128, size: TPM_ECC.NIST_P256 },
  { name: 'H-1', certIndex: 0x01c00012, type: 'rsa', nameAlg: TPM_ALG.SHA256, symKeyBits: 128, size: 2048 },
  { name: 'H-2', certIndex: 0x01c00014, type: 'ecc', nameAlg: TPM_ALG.SHA256, symKeyBits: 128, size: TPM_ECC.NIST_P256 },
  { name: 'H-3', certIndex: 0x01c00016, type: 'ecc', nameAlg: TPM_ALG.SHA384, symKeyBits: 256, size: TPM_ECC.NIST_P384 },
  { name: 'H-4', certIndex: 0x01c00018, type: 'ecc', nameAlg: TPM_ALG.SHA512, symKeyBits: 256, size: TPM_ECC.NIST_P521 },
  { name: 'H-6', certIndex: 0x01c0001c, type: 'rsa', nameAlg: TPM_ALG.SHA384, symKeyBits: 256, size: 3072 },
  { name: 'H-7', certIndex: 0x01c0001e, type: 'rsa', nameAlg: TPM_ALG.SHA384, symKeyBits: 256, size: 4096 },
];

function buildTemplate(spec: TemplateSpec): EkTemplate {
  const low = spec.name.startsWith('L');
  const w = new TpmWriter();
  w.u16(spec.type === 'rsa' ? TPM_ALG.RSA : TPM_ALG.ECC).u16(spec.nameAlg);
  w.u32(low ? ATTRIBUTES_LOW : ATTRIBUTES_HIGH).tpm2b(low ? ekPolicyA(spec.nameAlg) : ekPolicyB(spec.nameAlg));
  w.u16(TPM_ALG.AES).u16(spec.symKeyBits).u16(TPM_ALG.CFB).u16(TPM_ALG.NULL); // symmetric, scheme NULL
  if (spec.type === 'rsa') w.u16(spec.size).u32(0); // keyBits, exponent 0 (= 65537)
  else w.u16(spec.size).u16(TPM_ALG.NULL); // curveID, kdf NULL
  const parametersLength = w.length;
  // unique: the low range fills it with zeros of the key's size (256 bytes; 32 + 32), the high range leaves it empty.
  if (spec.type === 'rsa') w.tpm2b(new Uint8Array(low ? 256 : 0));
  else w.tpm2b(new Uint8Array(low ? 32 : 0)).tpm2b(new Uint8Array(low ? 32 : 0));
  const secret: PolicyStep = { kind: 'secret', authHandle: TPM_RH.ENDORSEMENT };
  const policy: PolicyStep[] = low ? [secret] : [secret, { kind: 'or', branches: [ekPolicyA(spec.nameAlg), ekPolicyC(spec.nameAlg)] }];
  return { name: spec.name, certIndex: spec.certIndex, type: spec.type, nameAlg: spec.nameAlg, bytes: w.finish(), parametersLength, policy };
}

/** The EK templates by name, in the order `findEkCertificates` prefers them. */
export const EK_TEMPLATES: ReadonlyMap<EkTemplateName, EkTemplate> = new Map(SPECS.map((s) => [s.name, buildTemplate(s)]));

/** The template an EK was made from: the one whose bytes before `unique` equal the EK's, if any. */
export function ekTemplateOf(ekPublicArea: Uint8Array): EkTemplate | undefined {
  return [...EK_TEMPLATES.values()].find((t) => bytesEqual(ekPublicArea.subarray(0, t.parametersLength), t.bytes.subarray(0, t.parametersLength)));
}

/** NV indices of the EK certificate chain (EK Credential Profile 2.x: 0x01C00100 to 0x01C001FF). */
export const EK_CHAIN_INDICES = { first: 0x01c00100, last: 0x01c001ff } as const;

/** An EK certificate read from the TPM. */
export interface EkCertificate {
  readonly template: EkTemplate;
  /** The certificate, DER (the first DER structure of its index: the rest is padding). */
  readonly certificate: Uint8Array;
}

/** The EK certificates the TPM holds, one per template whose certificate index is defined and written. */
export async function findEkCertificates(tpm: Tpm): Promise<EkCertificate[]> {
  const indices = new Set(await nvIndices(tpm, 0x01c00002, 0x01c0001f));
  const out: EkCertificate[] = [];
  for (const template of EK_TEMPLATES.values()) {
    if (!indices.has(template.certIndex)) continue;
    const { data } = await readNv(tpm, template.certIndex);
    const [certificate] = splitDer(data);
    if (certificate !== undefined) out.push({ template, certificate });
  }
  return out;
}

/** The certificates of the EK certificate chain the TPM holds (intermediate CAs, DER), in index order; often none. */
export async function readEkChain(tpm: Tpm): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for (const index of await nvIndices(tpm, EK_CHAIN_INDICES.first, EK_CHAIN_INDICES.last)) {
    out.push(...splitDer((await readNv(tpm, index)).data));
  }
  return out;
}

/** An EK loaded in the TPM: flush it when done. */
export interface LoadedEk {
  readonly handle: number;
  readonly template: EkTemplate;
  /** `TPM2B_PUBLIC` bytes as returned. */
  readonly public: Uint8Array;
  readonly name: Uint8Array;
}

/** Recreates the EK of `template` (CreatePrimary under TPM_RH_ENDORSEMENT: the same seed gives the same key). */
export async function createEk(tpm: Tpm, template: EkTemplate): Promise<LoadedEk> {
  const res = await tpm.execute(CreatePrimary, { hierarchy: TPM_RH.ENDORSEMENT, template: template.bytes });
  return { handle: res.handle, template, public: res.outPublic, name: res.name };
}

/** Creates the EK, runs `use` with it, and flushes it whatever happens. */
export async function withEk<T>(tpm: Tpm, template: EkTemplate, use: (ek: LoadedEk) => Promise<T>): Promise<T> {
  const ek = await createEk(tpm, template);
  try {
    return await use(ek);
  } finally {
    await tpm.flush(ek.handle);
  }
}
