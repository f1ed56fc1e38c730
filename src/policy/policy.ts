/**
 * Keylime runtime policies, format version 1: loading, validation, and the document form that
 * `keylime-policy create runtime` writes.
 *
 * Validation is Keylime's `RUNTIME_POLICY_SCHEMA` (keylime/ima/ima.py `validate_runtime_policy`):
 * every top-level field required; `meta.version` and `meta.generator` (0..3) integers;
 * `release` a non-negative integer; `digests`, `keyrings`, `ima-buf` objects mapping a name to a
 * non-empty list of lowercase hex digests of 40..128 digits; `excludes` a list of Python regular
 * expressions, valid once joined (keylime/common/validators.py `valid_exclude_list`);
 * `ima.ignored_keyrings` a list of names (`*` ignores every keyring), `ima.log_hash_alg` one of
 * sha1/sha256/sha384/sha512, `ima.dm_policy` null; `verification-keys` a string: empty, or the
 * JSON of one keyring `{"pubkeys": [base64 DER SubjectPublicKeyInfo, ...], "keyids": [int, ...]}`
 * (keylime/ima/file_signatures.py `ImaKeyring.to_string`/`from_string`; it may be JSON-encoded
 * twice, a key id of 0 or a missing one is computed from the key). Other top-level fields are
 * allowed, as the schema allows them. A DSSE envelope (`{"payload": base64, ...}`) is unwrapped
 * as Keylime's `deserialize_runtime_policy` does; its signatures are not checked here.
 *
 * Beyond Keylime, sizes are bounded (`POLICY_TOO_LARGE`) so a hostile policy cannot take the
 * verifier's memory, and `meta.version` must be 1 (`POLICY_VERSION`).
 */
import { DigestIndexBuilder, isLowerHex, type DigestIndex } from './digest-index.js';
import { PolicyError } from './errors.js';
import { parsePolicyBytes, ScannedDigestMap, type DigestListRules } from './policy-json.js';
import { compileExcludes, MAX_EXCLUDE_LENGTH, MAX_EXCLUDES } from './regex.js';
import { verificationKey, type VerificationKey } from './signatures.js';
import { createPublicKey } from 'node:crypto';

/** The policy format version this code reads and writes (ima.py RUNTIME_POLICY_CURRENT_VERSION). */
export const RUNTIME_POLICY_VERSION = 1;

/** `RUNTIME_POLICY_GENERATOR` (ima.py): Unknown, EmptyAllowList, CompatibleAllowList, LegacyAllowList. */
export const POLICY_GENERATOR = { unknown: 0, emptyAllowList: 1, compatibleAllowList: 2, legacyAllowList: 3 } as const;

/** Template-hash algorithms a policy may name (`ima.log_hash_alg`). */
export type LogHashAlg = 'sha1' | 'sha256' | 'sha384' | 'sha512';
const LOG_HASH_ALGS: readonly LogHashAlg[] = ['sha1', 'sha256', 'sha384', 'sha512'];

/** A runtime policy as JSON, field for field (keylime/ima/types.py `RuntimePolicyType`). */
export interface RuntimePolicyDocument {
  readonly meta: { readonly version: number; readonly generator: number; readonly timestamp?: string };
  readonly release: number;
  readonly digests: Readonly<Record<string, readonly string[]>>;
  readonly excludes: readonly string[];
  readonly keyrings: Readonly<Record<string, readonly string[]>>;
  readonly ima: { readonly ignored_keyrings: readonly string[]; readonly log_hash_alg: LogHashAlg; readonly dm_policy: null };
  readonly 'ima-buf': Readonly<Record<string, readonly string[]>>;
  readonly 'verification-keys': string;
}

/**
 * A validated policy, ready to judge records. Digest lists are compact indexes
 * ({@link DigestIndex}): a policy lists up to millions of digests, and each record looks one up.
 */
export interface RuntimePolicy {
  /** Path → allowed digests of files (and `boot_aggregate`). */
  readonly digests: DigestIndex;
  /** Keyring name → allowed digests of keys measured onto it. */
  readonly keyrings: DigestIndex;
  /** Buffer name → allowed digests of other ima-buf measurements. */
  readonly imaBuf: DigestIndex;
  /** The joined exclude list, anchored at the start (Python `re.match`), or null. */
  readonly exclude: RegExp | null;
  /** Keyrings whose key measurements are not judged; `*` in the policy ignores all. */
  readonly ignoredKeyrings: ReadonlySet<string>;
  readonly logHashAlg: LogHashAlg;
  /** Keys of `verification-keys` (Keylime's tenant keyring). */
  readonly keys: readonly VerificationKey[];
}

/** Largest policy accepted: Keylime's verifier default `max_upload_size` (100 MiB). */
export const MAX_POLICY_BYTES = 104_857_600;
/** Most names across `digests`, `keyrings` and `ima-buf`. */
export const MAX_POLICY_ENTRIES = 4_000_000;
/** Most digests listed for one name. */
export const MAX_DIGESTS_PER_ENTRY = 1024;
/** Longest name: PATH_MAX, what an `n-ng` field can hold. */
export const MAX_NAME_LENGTH = 4096;
/** Most verification keys, and most ignored keyrings. */
export const MAX_KEYS = 256;
export const MAX_IGNORED_KEYRINGS = 1024;


function schema(field: string, expected: string, value: unknown): PolicyError {
  const got = value === undefined ? 'missing' : value === null ? 'null' : Array.isArray(value) ? 'array' : typeof value;
  return new PolicyError('POLICY_SCHEMA', `${field} must be ${expected} (got ${got})`, { field, expected, got });
}

function tooLarge(field: string, limit: number, got: number): PolicyError {
  return new PolicyError('POLICY_TOO_LARGE', `${field} has ${got}, more than the limit of ${limit}`, { field, limit, got: String(got) });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A JSON integer as jsonschema sees one: a number with no fraction (booleans are not integers). */
function isInteger(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v);
}

function field(obj: Record<string, unknown>, name: string): unknown {
  return Object.hasOwn(obj, name) ? obj[name] : undefined;
}

function stringList(value: unknown, fieldName: string, limit: number, itemLimit: number): string[] {
  if (!Array.isArray(value)) throw schema(fieldName, 'an array of strings', value);
  if (value.length > limit) throw tooLarge(fieldName, limit, value.length);
  return value.map((item: unknown, i) => {
    if (typeof item !== 'string') throw schema(`${fieldName}[${i}]`, 'a string', item);
    if (item.length > itemLimit) throw tooLarge(`${fieldName}[${i}] length`, itemLimit, item.length);
    return item;
  });
}

/** One list of a `digests-object`: a name of at most PATH_MAX, a non-empty list of hex digests (40..128 lowercase hex digits). */
function checkDigestList(fieldName: string, name: string, list: unknown): readonly string[] {
  const where = `${fieldName}[${JSON.stringify(name.slice(0, 200))}]`;
  if (name.length > MAX_NAME_LENGTH) throw tooLarge(`${where} name length`, MAX_NAME_LENGTH, name.length);
  if (!Array.isArray(list) || list.length === 0) throw schema(where, 'a non-empty array of hex digests', list);
  if (list.length > MAX_DIGESTS_PER_ENTRY) throw tooLarge(where, MAX_DIGESTS_PER_ENTRY, list.length);
  for (let i = 0; i < list.length; i++) {
    const d: unknown = list[i];
    if (typeof d !== 'string' || !isLowerHex(d, 40, 128)) throw schema(`${where}[${i}]`, 'a string of 40..128 lowercase hex digits', d);
  }
  return list as string[];
}

const DIGEST_LIST_RULES: DigestListRules = { check: checkDigestList, maxDigests: MAX_DIGESTS_PER_ENTRY, maxName: MAX_NAME_LENGTH };

/** A `digests-object`: name → list (see checkDigestList), already indexed when read from a file's bytes. */
function digestMap(value: unknown, fieldName: string, budget: { entries: number }): DigestIndex {
  const limit = (): PolicyError => tooLarge('digests, keyrings and ima-buf names', MAX_POLICY_ENTRIES, budget.entries);
  if (value instanceof ScannedDigestMap) {
    if (value.error !== null) throw value.error;
    budget.entries += value.names;
    if (budget.entries > MAX_POLICY_ENTRIES) throw limit();
    return value.index;
  }
  if (!isObject(value)) throw schema(fieldName, 'an object of name → [hex digest, ...]', value);
  const builder = new DigestIndexBuilder();
  for (const [name, list] of Object.entries(value)) {
    if (++budget.entries > MAX_POLICY_ENTRIES) throw limit();
    const hex = checkDigestList(fieldName, name, list);
    builder.begin(name);
    for (const d of hex) builder.addHex(d);
  }
  return builder.build();
}

/**
 * The keys of `verification-keys`: empty, or (possibly twice JSON-encoded) `{"pubkeys": [...],
 * "keyids": [...]}` (file_signatures.py `ImaKeyring.from_string`).
 */
export function parseVerificationKeys(text: string): VerificationKey[] {
  if (text === '') return [];
  const bad = (message: string, cause?: unknown): PolicyError =>
    new PolicyError('POLICY_BAD_KEY', `verification-keys: ${message}`, { field: 'verification-keys' }, cause === undefined ? undefined : { cause });
  let value: unknown;
  try {
    value = JSON.parse(text);
    if (typeof value === 'string') value = JSON.parse(value);
  } catch (e) {
    throw bad('not JSON', e);
  }
  if (!isObject(value)) throw bad('not a JSON object {"pubkeys": [...], "keyids": [...]}');
  const pubkeys = field(value, 'pubkeys');
  const keyids = field(value, 'keyids') ?? [];
  if (!Array.isArray(pubkeys)) throw bad('"pubkeys" must be an array of base64 DER public keys');
  if (pubkeys.length > MAX_KEYS) throw tooLarge('verification-keys pubkeys', MAX_KEYS, pubkeys.length);
  if (!Array.isArray(keyids) || keyids.some((k) => !isInteger(k) || k < 0 || k > 0xffffffff)) throw bad('"keyids" must be an array of 32-bit integers');
  return pubkeys.map((b64: unknown, i) => {
    if (typeof b64 !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) throw bad(`pubkeys[${i}] is not base64`);
    let key;
    try {
      key = createPublicKey({ key: Buffer.from(b64, 'base64'), format: 'der', type: 'spki' });
    } catch (e) {
      throw bad(`pubkeys[${i}] is not a DER SubjectPublicKeyInfo`, e);
    }
    const id: unknown = keyids[i];
    const made = verificationKey(key, isInteger(id) && id !== 0 ? id : undefined);
    if (typeof made === 'string') throw bad(`pubkeys[${i}]: ${made}`);
    return made;
  });
}

/** The document inside a DSSE envelope, or the value itself (ima.py `deserialize_runtime_policy`). */
function unwrapDsse(value: unknown): unknown {
  if (!isObject(value) || typeof value.payload !== 'string' || value.payload === '') return value;
  try {
    return parsePolicyBytes(Buffer.from(value.payload, 'base64'), DIGEST_LIST_RULES);
  } catch (e) {
    throw new PolicyError('POLICY_BAD_JSON', 'the DSSE payload is not base64 of a JSON policy', { field: 'payload' }, { cause: e });
  }
}

/** Validates a parsed policy document and compiles it for judging. */
export function loadRuntimePolicy(value: unknown): RuntimePolicy {
  const doc = unwrapDsse(value);
  if (!isObject(doc)) throw schema('policy', 'a JSON object', doc);
  const meta = field(doc, 'meta');
  if (!isObject(meta)) throw schema('meta', 'an object', meta);
  const version = field(meta, 'version');
  if (!isInteger(version) || version < 0) throw schema('meta.version', 'a non-negative integer', version);
  if (version !== RUNTIME_POLICY_VERSION) {
    throw new PolicyError('POLICY_VERSION', `meta.version is ${version}; this code reads version ${RUNTIME_POLICY_VERSION}`, {
      field: 'meta.version',
      expected: String(RUNTIME_POLICY_VERSION),
      got: String(version),
    });
  }
  const generator = field(meta, 'generator');
  if (!isInteger(generator) || generator < 0 || generator > 3) throw schema('meta.generator', 'an integer 0..3', generator);
  const timestamp = field(meta, 'timestamp');
  if (timestamp !== undefined && typeof timestamp !== 'string') throw schema('meta.timestamp', 'a string', timestamp);
  const release = field(doc, 'release');
  if (!isInteger(release) || release < 0) throw schema('release', 'a non-negative integer', release);
  const budget = { entries: 0 };
  const digests = digestMap(field(doc, 'digests'), 'digests', budget);
  const keyrings = digestMap(field(doc, 'keyrings'), 'keyrings', budget);
  const imaBuf = digestMap(field(doc, 'ima-buf'), 'ima-buf', budget);
  const excludes = stringList(field(doc, 'excludes'), 'excludes', MAX_EXCLUDES, MAX_EXCLUDE_LENGTH);
  const ima = field(doc, 'ima');
  if (!isObject(ima)) throw schema('ima', 'an object', ima);
  const ignored = stringList(field(ima, 'ignored_keyrings'), 'ima.ignored_keyrings', MAX_IGNORED_KEYRINGS, MAX_NAME_LENGTH);
  const logHashAlg = LOG_HASH_ALGS.find((a) => a === field(ima, 'log_hash_alg'));
  if (logHashAlg === undefined) throw schema('ima.log_hash_alg', `one of ${LOG_HASH_ALGS.join(', ')}`, field(ima, 'log_hash_alg'));
  if (field(ima, 'dm_policy') !== null) throw schema('ima.dm_policy', 'null (device-mapper policies are not read)', field(ima, 'dm_policy'));
  const keysText = field(doc, 'verification-keys');
  if (typeof keysText !== 'string') throw schema('verification-keys', 'a string', keysText);
  return {
    digests,
    keyrings,
    imaBuf,
    exclude: compileExcludes(excludes),
    ignoredKeyrings: new Set(ignored),
    logHashAlg,
    keys: parseVerificationKeys(keysText),
  };
}

/**
 * Parses and validates a policy file's bytes or text (UTF-8 JSON), the digest maps read straight
 * into compact indexes (src/policy/policy-json.ts).
 * @example
 * ```ts
 * const judge = new PolicyJudge(parseRuntimePolicy(await readFile('runtime-policy.json')));
 * ```
 * @throws {POLICY_TOO_LARGE} the input, or a list in it, is past its limit
 * @throws {POLICY_BAD_JSON} not JSON
 * @throws {POLICY_VERSION} not a version-1 Keylime runtime policy
 * @throws {POLICY_SCHEMA} a field of the wrong shape (the error names it)
 * @throws {POLICY_BAD_REGEX} an exclude is not a valid regular expression
 * @throws {POLICY_REGEX_UNSUPPORTED} an exclude Python accepts and this translation cannot match the same way
 * @throws {POLICY_BAD_KEY} a verification key does not parse
 */
export function parseRuntimePolicy(input: string | Uint8Array): RuntimePolicy {
  const size = typeof input === 'string' ? Buffer.byteLength(input) : input.length;
  if (size > MAX_POLICY_BYTES) throw tooLarge('policy bytes', MAX_POLICY_BYTES, size);
  return loadRuntimePolicy(parsePolicyBytes(typeof input === 'string' ? Buffer.from(input, 'utf8') : input, DIGEST_LIST_RULES));
}

/** The policy's JSON text on one line (`keylime-policy create runtime` writes `json.dumps` of it). */
export function formatRuntimePolicy(doc: RuntimePolicyDocument): string {
  return JSON.stringify(doc);
}
