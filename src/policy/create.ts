/**
 * A runtime policy from a known-good log, as `keylime-policy create runtime -m LOG -k -b` makes
 * one (keylime/policy/create_runtime_policy.py `get_hashes_from_measurement_list`,
 * `process_ima_buf_in_measurement_list`, `create_runtime_policy`): every file record's digest
 * under its path (boot_aggregate included), key measurements under their keyring unless the
 * keyring is ignored, other buffers under their name in `ima-buf`; lists sorted and unique;
 * `meta.generator` LegacyAllowList and a timestamp; `log_hash_alg` sha1.
 *
 * Unlike Keylime's tool, violations (whose all-zero digest is no file's) and records that do not
 * decode are left out, and every file template is read, not only ima-ng and ima-sig.
 */
import { decodeTemplateFields, isViolation, toHex, type Endian, type ImaRecord } from '../ima/index.js';
import { POLICY_GENERATOR, RUNTIME_POLICY_VERSION, type RuntimePolicyDocument } from './policy.js';
import { keyFromBuffer } from './signatures.js';

/** Options of {@link PolicyBuilder}. */
export interface PolicyBuilderOptions {
  /** `meta.timestamp` (Keylime writes `str(datetime.now())`); omitted when undefined. */
  readonly timestamp?: string;
  /** Keyrings whose keys are not added (`--ignored-keyrings`); written to `ima.ignored_keyrings`. */
  readonly ignoredKeyrings?: readonly string[];
  /** Exclude expressions written as they are (Python syntax). */
  readonly excludes?: readonly string[];
  /** `verification-keys` written as it is. */
  readonly verificationKeys?: string;
  /** Byte order of the records' template data (default `le`). */
  readonly endian?: Endian;
}

function add(map: Map<string, Set<string>>, name: string, digest: string): void {
  let set = map.get(name);
  if (set === undefined) {
    set = new Set();
    map.set(name, set);
  }
  set.add(digest);
}

function sortedLists(map: Map<string, Set<string>>): Record<string, string[]> {
  return Object.fromEntries([...map].map(([name, set]) => [name, [...set].sort()]));
}

/** Collects a policy from records fed one at a time. Memory: the policy itself. */
export class PolicyBuilder {
  readonly #options: PolicyBuilderOptions;
  readonly #digests = new Map<string, Set<string>>();
  readonly #keyrings = new Map<string, Set<string>>();
  readonly #imaBuf = new Map<string, Set<string>>();
  #skipped = 0;

  constructor(options: PolicyBuilderOptions = {}) {
    this.#options = options;
  }

  /** Records left out: violations and records that do not decode. */
  get skipped(): number {
    return this.#skipped;
  }

  add(rec: ImaRecord): void {
    if (isViolation(rec)) {
      this.#skipped++;
      return;
    }
    let fields;
    try {
      fields = decodeTemplateFields(rec, this.#options.endian ?? 'le').fields;
    } catch {
      this.#skipped++;
      return;
    }
    const digest = fields.find((f) => f.id === 'd' || f.id === 'd-ng' || f.id === 'd-ngv2');
    const name = fields.find((f) => f.id === 'n' || f.id === 'n-ng');
    const buf = fields.find((f) => f.id === 'buf');
    if (digest === undefined || name === undefined || !('digest' in digest) || !('text' in name)) {
      this.#skipped++;
      return;
    }
    const hex = toHex(digest.digest);
    if (buf === undefined) add(this.#digests, name.text, hex);
    else if (keyFromBuffer(buf.bytes).kind === 'key') {
      if (!(this.#options.ignoredKeyrings ?? []).includes(name.text)) add(this.#keyrings, name.text, hex);
    } else add(this.#imaBuf, name.text, hex);
  }

  /** The policy document of every record added. */
  document(): RuntimePolicyDocument {
    const o = this.#options;
    return {
      meta: { version: RUNTIME_POLICY_VERSION, generator: POLICY_GENERATOR.legacyAllowList, ...(o.timestamp === undefined ? {} : { timestamp: o.timestamp }) },
      release: 0,
      digests: sortedLists(this.#digests),
      excludes: [...new Set(o.excludes ?? [])].sort(),
      keyrings: sortedLists(this.#keyrings),
      ima: { ignored_keyrings: [...new Set(o.ignoredKeyrings ?? [])].sort(), log_hash_alg: 'sha1', dm_policy: null },
      'ima-buf': sortedLists(this.#imaBuf),
      'verification-keys': o.verificationKeys ?? '',
    };
  }
}
