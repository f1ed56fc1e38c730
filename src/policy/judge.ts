/**
 * Judging measurement records against a runtime policy, one record at a time, the way Keylime's
 * verifier does (keylime/ima/ima.py `_process_measurement_list` with `_validate_ima_ng`,
 * `_validate_ima_sig`, `_validate_ima_buf`; keylime/ima/ast.py `Entry.invalid`):
 *
 * - a record on another PCR than the IMA PCR fails (`pcr`), and is judged further;
 * - a violation (all-zero template digest: ToMToU or open-writers, docs/ima-formats.md#violations) is not
 *   judged against the policy. Keylime then fails it only if the verifier option
 *   `ignore_tomtou_errors` is set (ast.py `Entry.invalid`; default false, so accepted): the
 *   treatment is {@link JudgeOptions.violations}, named in the verdict;
 * - the SHA-1 template digest must be SHA-1 of the template data (`template_hash`);
 * - a buffer record (a `buf` field: ima-buf): if the buffer is a key (X.509 certificate, public or
 *   private key; file_signatures.py `get_pubkey`), its keyring is skipped when ignored
 *   (`ima.ignored_keyrings`, `*` = all), else its digest must be listed under the keyring in
 *   `keyrings`, and the key is then learned for signature checks of later records (Keylime adds
 *   it to the agent's keyrings); a key of another type than RSA/EC is `invalid_key`; any other
 *   buffer must be listed in `ima-buf`;
 * - a file record (ima, ima-ng, ima-ngv2, ima-sig, ima-sigv2, ima-modsig, evm-sig, custom
 *   templates with a digest and a name): an excluded path passes (the joined `excludes`, matched
 *   at the start of the path); a record with a well-formed `sig` passes if the signature verifies
 *   with a key of `verification-keys` or a learned one; otherwise its digest must be listed for
 *   its path in `digests` (`not_in_policy`, `digest_not_allowed`; `boot_aggregate` for the
 *   boot_aggregate record). When the digest fails, the signature's own failure is named first.
 *
 * * The file digest is compared as bytes with the policy's hex digests (Keylime compares lowercase hex); its algorithm prefix
 * (`sha256:`) is honoured by requiring the digest to have that algorithm's size
 * (`digest_malformed` otherwise) and, for signatures, by requiring the signature's hash algorithm
 * to be the digest's (`signature_hash_mismatch`, file_signatures.py `_asymmetric_verify`).
 * An ima-modsig record's appended signature (src/policy/modsig.ts) passes it as a verified `sig`
 * does; each failing signature is named (`signature_*` for `sig`, `modsig_*`) before the digest's
 * reason. An evm-sig record's portable EVM signature (src/policy/evm.ts) passes it when it verifies
 * and `security.ima` binds the record's digest (`evmsig_*`). Keylime itself cannot parse ima-modsig
 * or evm-sig records (keylime/ima/ast.py `Entry` knows ima,
 * ima-ng, ima-sig and ima-buf) and fails them; docs/policy.md#where-imakeep-goes-beyond-keylime.
 *
 * Memory is bounded whatever the log's length: counters, the learned keys (at most
 * {@link MAX_LEARNED_KEYS}), and the findings the caller chooses to collect.
 */
import { bytesEqual } from '../base/bytes.js';
import { computeTemplateDigest, decodeTemplateFields, isViolation, toHex, type Endian, type ImaRecord, type TemplateField } from '../ima/index.js';
import type { DigestIndex } from './digest-index.js';
import type { RuntimePolicy } from './policy.js';
import { checkEvmSignature, type EvmFields, type EvmStatus } from './evm.js';
import { checkModsig } from './modsig.js';
import { checkSignature, hashAlgoSize, keyFromBuffer, Keyring, parseImaSignature, verificationKey, type SignatureStatus } from './signatures.js';

/** Why a record failed: stable codes. */
export type ReasonCode =
  /** The path is not in `digests` (Keylime `not_in_allowlist`). */
  | 'not_in_policy'
  /** The path is in `digests`, its digest is not listed (Keylime `runtime_policy_hash`). */
  | 'digest_not_allowed'
  /** The boot_aggregate digest is not one of the allowed values. */
  | 'boot_aggregate'
  /** A key measured onto a keyring is not listed for that keyring in `keyrings`. */
  | 'keyring_not_allowed'
  /** An ima-buf buffer is not listed in `ima-buf`. */
  | 'buffer_not_allowed'
  /** A measured key of a type other than RSA or EC (Keylime `invalid_key`). */
  | 'invalid_key'
  /** The signature does not verify with the key of its key id. */
  | 'signature_invalid'
  /** No policy or learned key has the signature's key id. */
  | 'signature_unknown_key'
  /** The `sig` field is not a v2/v3 IMA signature (header, type or version). */
  | 'signature_malformed'
  /** The signature's hash algorithm is not the algorithm of the record's digest. */
  | 'signature_hash_mismatch'
  /** The signature uses a hash algorithm imakeep does not verify. */
  | 'signature_unsupported'
  /** ima-modsig: the appended signature does not verify with the key that signer names. */
  | 'modsig_invalid'
  /** ima-modsig: no policy or learned key is the signer's (by key identifier, issuer and serial, or trying the policy's keys). */
  | 'modsig_unknown_key'
  /** ima-modsig: the `modsig` field is not a PKCS#7 SignedData with one signer. */
  | 'modsig_malformed'
  /** ima-modsig: `d-modsig` is not in the signer's digest algorithm, or not the digest of its authenticated attributes. */
  | 'modsig_hash_mismatch'
  /** ima-modsig: the signer's digest algorithm is one imakeep does not verify with. */
  | 'modsig_unsupported'
  /** evm-sig: the portable EVM signature does not verify over the record's xattrs, uid, gid and mode. */
  | 'evmsig_invalid'
  /** evm-sig: no policy or learned key has the EVM signature's key id. */
  | 'evmsig_unknown_key'
  /** evm-sig: `evmsig` is not a portable signature header, or the xattr fields do not decode, or lack `security.ima`. */
  | 'evmsig_malformed'
  /** evm-sig: a hash algorithm imakeep does not verify with. */
  | 'evmsig_unsupported'
  /** evm-sig: the EVM signature verifies, but `security.ima` is neither the record's digest nor a valid signature of it. */
  | 'evmsig_unbound'
  /** A violation, when the treatment is `reject`. */
  | 'violation'
  /** The SHA-1 template digest is not SHA-1 of the template data. */
  | 'template_hash'
  /** The record was extended into another PCR than the IMA PCR. */
  | 'pcr'
  /** Unknown template, or template data that do not decode (Keylime: entry not parsable). */
  | 'unparsable'
  /** The digest's length is not its algorithm's digest size, or the algorithm is unknown. */
  | 'digest_malformed';

/** Every reason code, in a stable order (for summaries). */
export const REASON_CODES: readonly ReasonCode[] = [
  'not_in_policy',
  'digest_not_allowed',
  'boot_aggregate',
  'keyring_not_allowed',
  'buffer_not_allowed',
  'invalid_key',
  'signature_invalid',
  'signature_unknown_key',
  'signature_malformed',
  'signature_hash_mismatch',
  'signature_unsupported',
  'modsig_invalid',
  'modsig_unknown_key',
  'modsig_malformed',
  'modsig_hash_mismatch',
  'modsig_unsupported',
  'evmsig_invalid',
  'evmsig_unknown_key',
  'evmsig_malformed',
  'evmsig_unsupported',
  'evmsig_unbound',
  'violation',
  'template_hash',
  'pcr',
  'unparsable',
  'digest_malformed',
];

/** What happens to a violation: `accept` (Keylime's default) or `reject`. */
export type ViolationTreatment = 'accept' | 'reject';

/** Options of a {@link PolicyJudge}. */
export interface JudgeOptions {
  /** Global index of the first record judged (default 0): the verdict's indexes count from it. */
  readonly from?: number;
  /** Violations: `accept` (default, Keylime's `ignore_tomtou_errors = False`) or `reject`. */
  readonly violations?: ViolationTreatment;
  /** The IMA PCR (default 10, Keylime's `config.IMA_PCR`). */
  readonly imaPcr?: number;
  /** Byte order of the records' template data (default `le`). */
  readonly endian?: Endian;
  /**
   * Check each record's SHA-1 template digest (default true). A caller that already replayed the
   * records (a verified bundle) may turn it off.
   */
  readonly checkTemplateHash?: boolean;
  /** More allowed boot_aggregate values, hex (Keylime's `boot_aggregates` from the quote). */
  readonly bootAggregates?: readonly string[];
  /** Keep findings for {@link PolicyJudge.verdict} (default true); false keeps memory flat. */
  readonly collect?: boolean;
  /** Called with every finding (failure or violation) as it is made. */
  readonly onFinding?: (finding: Finding) => void;
}

/** A record the verdict reports: a failure, a violation, or both. */
export interface Finding {
  /** Global index of the record. */
  readonly index: number;
  readonly template: string;
  /** The record's path or buffer name ('' if its data do not decode). */
  readonly path: string;
  /** The file or buffer digest as `<algo>:<hex>` (or hex for the `ima` template; '' if undecodable). */
  readonly digest: string;
  /** Why it failed, first the primary reason; empty for an accepted violation. */
  readonly reasons: readonly ReasonCode[];
  /** True for a violation (all-zero template digest). */
  readonly violation: boolean;
}

/** Counts over the records judged. */
export interface VerdictSummary {
  /** Global index of the first record judged, and how many were judged. */
  readonly from: number;
  readonly records: number;
  readonly passed: number;
  readonly failed: number;
  /** Records that passed because their path or name is excluded. */
  readonly excluded: number;
  /** Records that passed by a verified signature. */
  readonly signaturesVerified: number;
  /** Key measurements skipped because their keyring is ignored. */
  readonly keyringsIgnored: number;
  /** Keys learned from trusted keyring measurements. */
  readonly keysLearned: number;
  readonly violations: number;
  /** How violations were treated. */
  readonly violationTreatment: ViolationTreatment;
  /** Failing records per reason (a record with two reasons counts under both). */
  readonly reasons: Readonly<Partial<Record<ReasonCode, number>>>;
}

/** The judgment of a run of records. */
export interface Verdict {
  /** True when no record failed. */
  readonly ok: boolean;
  /** Every failing record, in order (when collected). */
  readonly failures: readonly Finding[];
  /** Every violation, in order (when collected), whatever its treatment. */
  readonly violations: readonly Finding[];
  readonly summary: VerdictSummary;
}

/** Most keys learned from keyring measurements (a hostile log cannot grow the keyring past it). */
export const MAX_LEARNED_KEYS = 1024;

const SIGNATURE_REASON: Readonly<Record<Exclude<SignatureStatus, 'valid'>, ReasonCode>> = {
  invalid: 'signature_invalid',
  'unknown-key': 'signature_unknown_key',
  malformed: 'signature_malformed',
  'hash-mismatch': 'signature_hash_mismatch',
  unsupported: 'signature_unsupported',
};

const EVM_REASON: Readonly<Record<Exclude<EvmStatus, 'valid'>, ReasonCode>> = {
  invalid: 'evmsig_invalid',
  'unknown-key': 'evmsig_unknown_key',
  malformed: 'evmsig_malformed',
  unsupported: 'evmsig_unsupported',
  unbound: 'evmsig_unbound',
};

const MODSIG_REASON: Readonly<Record<Exclude<SignatureStatus, 'valid'>, ReasonCode>> = {
  invalid: 'modsig_invalid',
  'unknown-key': 'modsig_unknown_key',
  malformed: 'modsig_malformed',
  'hash-mismatch': 'modsig_hash_mismatch',
  unsupported: 'modsig_unsupported',
};

/** The fields the judge reads from a record's template data. */
interface RecordFields {
  readonly path: string;
  readonly algo: string;
  readonly digest: Uint8Array;
  /** The text before the digest as the ASCII list shows it (`sha256:`). */
  readonly prefix: string;
  readonly sig: Uint8Array | undefined;
  readonly buf: Uint8Array | undefined;
  /** ima-modsig: the appended signature (PKCS#7) and the digest it signs (`d-modsig`), when present. */
  readonly modsig: { readonly pkcs7: Uint8Array; readonly algo: string; readonly digest: Uint8Array } | undefined;
  /** evm-sig: the portable EVM signature and what it covers, when present ('malformed' if a field is unusable). */
  readonly evm: EvmFields | 'malformed' | undefined;
}

/** The digest, name, sig and buf fields of a decoded template; null if it lacks a digest or a name. */
function recordFields(fields: readonly TemplateField[]): RecordFields | null {
  let digestField: Extract<TemplateField, { id: 'd' }> | Extract<TemplateField, { id: 'd-ng' | 'd-ngv2' | 'd-modsig' }> | undefined;
  let path: string | undefined;
  let sig: Uint8Array | undefined;
  let buf: Uint8Array | undefined;
  let modsigDigest: { readonly algo: string; readonly digest: Uint8Array } | undefined;
  let pkcs7: Uint8Array | undefined;
  const evm: { evmsig?: Uint8Array; names?: string; lengths?: Uint8Array; values?: Uint8Array; uid?: bigint | null; gid?: bigint | null; mode?: bigint | null } = {};
  for (const f of fields) {
    if ((f.id === 'd' || f.id === 'd-ng' || f.id === 'd-ngv2') && digestField === undefined) digestField = f;
    else if ((f.id === 'n' || f.id === 'n-ng') && path === undefined) path = f.text;
    else if (f.id === 'sig') sig = f.bytes;
    else if (f.id === 'buf') buf = f.bytes;
    else if (f.id === 'd-modsig') modsigDigest = f;
    else if (f.id === 'modsig') pkcs7 = f.bytes;
    else if (f.id === 'evmsig') evm.evmsig = f.bytes;
    else if (f.id === 'xattrnames') evm.names = f.text;
    else if (f.id === 'xattrlengths') evm.lengths = f.bytes;
    else if (f.id === 'xattrvalues') evm.values = f.bytes;
    else if (f.id === 'iuid') evm.uid = f.value;
    else if (f.id === 'igid') evm.gid = f.value;
    else if (f.id === 'imode') evm.mode = f.value;
  }
  if (digestField === undefined || path === undefined) return null;
  // Without an appended signature both fields are empty (ima_template_lib.c `ima_eventdigest_modsig_init`, `ima_eventmodsig_init`).
  const modsig = pkcs7 !== undefined && pkcs7.length > 0 && modsigDigest !== undefined ? { pkcs7, algo: modsigDigest.algo, digest: modsigDigest.digest } : undefined;
  // Without a portable EVM signature `evmsig` is empty (ima_template_lib.c `ima_eventevmsig_init`).
  const { evmsig, names = '', lengths = new Uint8Array(0), values = new Uint8Array(0), uid, gid, mode } = evm;
  const evmFields =
    evmsig === undefined || evmsig.length === 0 ? undefined : uid == null || gid == null || mode == null ? 'malformed' : { evmsig, names, lengths, values, uid, gid, mode };
  // The `ima` template's `d` has no prefix: a SHA-1 digest (or an MD5 one padded to 20 bytes).
  if (digestField.id === 'd') return { path, algo: 'sha1', digest: digestField.digest, prefix: '', sig, buf, modsig, evm: evmFields };
  return { path, algo: digestField.algo, digest: digestField.digest, prefix: digestField.prefix, sig, buf, modsig, evm: evmFields };
}

/** No reason, and each reason alone: shared arrays, so a passing record allocates none. */
const PASS: readonly ReasonCode[] = [];
const ONLY = Object.fromEntries(REASON_CODES.map((r) => [r, [r]])) as unknown as Readonly<Record<ReasonCode, readonly ReasonCode[]>>;

/** A record's finding: the PCR reason (if any) first, then the others. */
function finding(rec: ImaRecord, index: number, fields: RecordFields | null, pcr: readonly ReasonCode[], more: readonly ReasonCode[], violation: boolean): Finding {
  return {
    index,
    template: rec.template,
    path: fields?.path ?? '',
    digest: fields === null ? '' : `${fields.prefix}${toHex(fields.digest)}`,
    reasons: [...pcr, ...more],
    violation,
  };
}

function emptyCounts(): Record<ReasonCode, number> {
  return Object.fromEntries(REASON_CODES.map((r) => [r, 0])) as Record<ReasonCode, number>;
}

/**
 * Judges records one at a time against one policy. Keeps counters, the keys learned from trusted
 * keyring measurements, and (unless `collect: false`) the findings.
 */
export class PolicyJudge {
  readonly #policy: RuntimePolicy;
  readonly #from: number;
  readonly #treatment: ViolationTreatment;
  readonly #imaPcr: number;
  readonly #endian: Endian;
  readonly #checkTemplateHash: boolean;
  readonly #bootAggregates: ReadonlySet<string>;
  readonly #collect: boolean;
  readonly #onFinding: ((finding: Finding) => void) | undefined;
  readonly #keys = new Keyring();
  readonly #failures: Finding[] = [];
  readonly #violations: Finding[] = [];
  readonly #reasons = emptyCounts();
  #records = 0;
  #failed = 0;
  #excluded = 0;
  #signaturesVerified = 0;
  #keyringsIgnored = 0;
  #keysLearned = 0;
  #violationCount = 0;

  constructor(policy: RuntimePolicy, options: JudgeOptions = {}) {
    this.#policy = policy;
    this.#from = options.from ?? 0;
    this.#treatment = options.violations ?? 'accept';
    this.#imaPcr = options.imaPcr ?? 10;
    this.#endian = options.endian ?? 'le';
    this.#checkTemplateHash = options.checkTemplateHash ?? true;
    this.#bootAggregates = new Set([...(policy.digests.hexDigests('boot_aggregate')), ...(options.bootAggregates ?? [])]);
    this.#collect = options.collect ?? true;
    this.#onFinding = options.onFinding;
    for (const key of policy.keys) this.#keys.add(key);
  }

  /** Records judged so far; the next record's global index is `from + judged`. */
  get judged(): number {
    return this.#records;
  }

  /**
   * Judges the next record (global index `from + judged`). Returns the finding, or null when the
   * record passed and is no violation. The record's bytes are not kept.
   */
  judge(rec: ImaRecord): Finding | null {
    const index = this.#from + this.#records;
    this.#records++;
    const finding = this.#judge(rec, index);
    if (finding === null) return null;
    if (finding.violation) {
      this.#violationCount++;
      if (this.#collect) this.#violations.push(finding);
    }
    if (finding.reasons.length > 0) {
      this.#failed++;
      for (const r of new Set(finding.reasons)) this.#reasons[r]++;
      if (this.#collect) this.#failures.push(finding);
    }
    this.#onFinding?.(finding);
    return finding;
  }

  /** The verdict over every record judged so far. */
  verdict(): Verdict {
    const reasons = Object.fromEntries(REASON_CODES.filter((r) => this.#reasons[r] > 0).map((r) => [r, this.#reasons[r]]));
    return {
      ok: this.#failed === 0,
      failures: this.#failures,
      violations: this.#violations,
      summary: {
        from: this.#from,
        records: this.#records,
        passed: this.#records - this.#failed,
        failed: this.#failed,
        excluded: this.#excluded,
        signaturesVerified: this.#signaturesVerified,
        keyringsIgnored: this.#keyringsIgnored,
        keysLearned: this.#keysLearned,
        violations: this.#violationCount,
        violationTreatment: this.#treatment,
        reasons,
      },
    };
  }

  #judge(rec: ImaRecord, index: number): Finding | null {
    const pcr = rec.pcr === this.#imaPcr ? PASS : ONLY.pcr;
    let fields: RecordFields | null = null;
    try {
      const decoded = decodeTemplateFields(rec, this.#endian, index);
      fields = decoded.fieldIds === null ? null : recordFields(decoded.fields);
    } catch {
      fields = null;
    }
    if (isViolation(rec)) return finding(rec, index, fields, pcr, this.#treatment === 'reject' ? ONLY.violation : PASS, true);
    if (this.#checkTemplateHash && !bytesEqual(computeTemplateDigest(rec, 'sha1', this.#endian), rec.digest)) return finding(rec, index, fields, pcr, ONLY.template_hash, false);
    if (fields === null) return finding(rec, index, fields, pcr, ONLY.unparsable, false);
    const size = hashAlgoSize(fields.algo);
    if (size === undefined || size !== fields.digest.length) return finding(rec, index, fields, pcr, ONLY.digest_malformed, false);
    const more = fields.buf === undefined ? this.#file(fields) : this.#buffer(fields);
    return pcr.length + more.length === 0 ? null : finding(rec, index, fields, pcr, more, false);
  }

  #excludes(path: string): boolean {
    const excluded = this.#policy.exclude?.test(path) ?? false;
    if (excluded) this.#excluded++;
    return excluded;
  }

  /** `_validate_ima_ng` against one of the policy's digest maps. */
  #listed(fields: RecordFields, index: DigestIndex, missing: ReasonCode, wrong: ReasonCode): readonly ReasonCode[] {
    if (this.#excludes(fields.path)) return PASS;
    if (!index.hasName(fields.path)) return ONLY[missing];
    return index.has(fields.path, fields.digest) ? PASS : ONLY[wrong];
  }

  #file(fields: RecordFields): readonly ReasonCode[] {
    const signatureReasons: ReasonCode[] = [];
    if (fields.sig !== undefined && fields.sig.length > 0) {
      const sig = parseImaSignature(fields.sig);
      if (sig === null) {
        signatureReasons.push('signature_malformed');
      } else {
        if (this.#excludes(fields.path)) return PASS;
        const status = checkSignature(sig, fields.digest, fields.algo, this.#keys);
        if (status === 'valid') return this.#verified();
        signatureReasons.push(SIGNATURE_REASON[status]);
      }
    }
    if (fields.modsig !== undefined) {
      if (this.#excludes(fields.path)) return PASS;
      const status = checkModsig(fields.modsig.pkcs7, fields.modsig.digest, fields.modsig.algo, this.#keys);
      if (status === 'valid') return this.#verified();
      signatureReasons.push(MODSIG_REASON[status]);
    }
    if (fields.evm !== undefined) {
      if (this.#excludes(fields.path)) return PASS;
      const status = fields.evm === 'malformed' ? 'malformed' : checkEvmSignature(fields.evm, fields.digest, fields.algo, this.#keys, this.#endian);
      if (status === 'valid') return this.#verified();
      signatureReasons.push(EVM_REASON[status]);
    }
    let digestReasons: readonly ReasonCode[];
    if (fields.path === 'boot_aggregate') {
      digestReasons = this.#excludes(fields.path) || this.#bootAggregates.has(toHex(fields.digest)) ? PASS : ONLY.boot_aggregate;
    } else {
      digestReasons = this.#listed(fields, this.#policy.digests, 'not_in_policy', 'digest_not_allowed');
    }
    if (digestReasons.length === 0) return PASS;
    return signatureReasons.length === 0 ? digestReasons : [...signatureReasons, ...digestReasons];
  }

  #verified(): readonly ReasonCode[] {
    this.#signaturesVerified++;
    return PASS;
  }

  #buffer(fields: RecordFields): readonly ReasonCode[] {
    const buf = fields.buf ?? new Uint8Array(0);
    const found = keyFromBuffer(buf);
    if (found.kind === 'none') return this.#listed(fields, this.#policy.imaBuf, 'buffer_not_allowed', 'buffer_not_allowed');
    const type = found.key.asymmetricKeyType;
    if (type !== 'rsa' && type !== 'ec') return ONLY.invalid_key;
    const ignored = this.#policy.ignoredKeyrings;
    if (ignored.has('*') || ignored.has(fields.path)) {
      this.#keyringsIgnored++;
      return PASS;
    }
    const reasons = this.#listed(fields, this.#policy.keyrings, 'keyring_not_allowed', 'keyring_not_allowed');
    // A trusted key joins the keyrings only now (Keylime `add_pubkey_to_keyring` after validation);
    // a curve imakeep cannot verify with is judged, not learned.
    const key = reasons.length === 0 && this.#keysLearned < MAX_LEARNED_KEYS ? verificationKey(found.key, found.keyId, found.issuerSerial) : undefined;
    if (key !== undefined && typeof key !== 'string' && this.#keys.get(key.keyId) === undefined) {
      this.#keys.add(key);
      this.#keysLearned++;
    }
    return reasons;
  }
}
