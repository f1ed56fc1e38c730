/**
 * Deterministic synthetic IMA workloads: records as a kernel would write them, for the securityfs
 * emulator, tests and benchmarks. Same seed, same options → same records, byte for byte.
 *
 * What it imitates (docs/ima-formats.md#templates-and-fields and the real-kernel fixtures): a `boot_aggregate`
 * first record, then file measurements with paths under the usual system directories, `ima-sig`
 * records with or without a `security.ima` signature (empty `sig` field), `ima-buf` records for
 * kexec-cmdline and keyring keys (d-ng = hash of the buffer), and violations (open_writers /
 * ToMToU): all-zero template digest and an all-zero file digest of the `ima_hash` algorithm.
 */
import { DIGEST_SIZE, type BankName, type ImaRecord } from './record.js';
import { bankHash, concatBytes, latin1Bytes, type Endian } from './hash.js';
import { computeTemplateDigest } from './digest.js';
import { encodeTemplateData } from './template.js';

/** Templates the generator writes; `mixed` interleaves all three (80% ima-sig, 20% ima-buf). */
export type WorkloadTemplate = 'ima-ng' | 'ima-sig' | 'ima-buf' | 'mixed';

/** Options of a {@link ImaWorkload}. */
export interface WorkloadOptions {
  /** Seed of the pseudo-random sequence (a 32-bit integer). */
  readonly seed: number;
  /** Template of the records after boot_aggregate; default `ima-ng`. */
  readonly template?: WorkloadTemplate;
  /** File hash algorithm (`ima_hash=`); default sha256. */
  readonly fileHash?: BankName;
  /** Fraction of file measurements that are violations, 0..1; default 0. */
  readonly violationRate?: number;
  /** Fraction of `ima-sig` records carrying a signature, 0..1; default 0.5. */
  readonly signedRate?: number;
  /** PCR of every record; default 10. */
  readonly pcr?: number;
  /** boot_aggregate digest of the first record; default pseudo-random. False: no boot_aggregate. */
  readonly bootAggregate?: Uint8Array | false;
  /** Byte order of the template data's length prefixes; default `le`. */
  readonly endian?: Endian;
}

/**
 * mulberry32: a small, fast, well-mixed 32-bit PRNG, enough for test workloads (not crypto).
 * Returns a generator of uint32 values; seeded, so a failing test run replays.
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

const DIRS = [
  '/usr/bin',
  '/usr/sbin',
  '/usr/lib/x86_64-linux-gnu',
  '/usr/lib/systemd',
  '/usr/libexec',
  '/etc',
  '/etc/systemd/system',
  '/usr/lib/python3/dist-packages',
  '/usr/share/perl5',
  '/var/lib/dpkg/info',
  '/opt/app/bin',
  '/lib/modules/6.1.0-56-amd64/kernel/drivers/net',
];
const STEMS = ['ssh', 'bash', 'python3', 'libc', 'libssl', 'systemd', 'udev', 'cron', 'nginx', 'journal', 'apt', 'ld-linux', 'perl', 'sudo', 'curl', 'libz', 'dbus', 'agent'];
const SUFFIXES = ['', '', '', '.so.6', '.so.3', '.conf', '.py', '.pm', '.service', '.ko', '.sh', '.list'];
const KEYRINGS = ['.builtin_trusted_keys', '.ima', '.evm', '.platform'];

/** Field bytes of a digest-with-algo field: `<algo>:` + NUL + digest (docs/ima-formats.md#templates-and-fields). */
export function digestNgField(algo: string, digest: Uint8Array): Uint8Array {
  return concatBytes([latin1Bytes(`${algo}:`), new Uint8Array(1), digest]);
}

/** Field bytes of an `n-ng` field: the name with spaces replaced by `_`, then NUL (docs/ima-formats.md#templates-and-fields). */
export function nameNgField(name: string): Uint8Array {
  return concatBytes([latin1Bytes(name.replaceAll(' ', '_')), new Uint8Array(1)]);
}

/**
 * A record of `template` from its field bytes: template data with length prefixes in `endian`, SHA-1
 * template digest (all zero for a violation).
 */
export function makeRecord(
  template: string,
  fields: readonly Uint8Array[],
  opts: { readonly pcr?: number; readonly violation?: boolean; readonly endian?: Endian } = {},
): ImaRecord {
  const endian = opts.endian ?? 'le';
  const data = encodeTemplateData(template, fields, endian);
  const digest = opts.violation === true ? new Uint8Array(DIGEST_SIZE.sha1) : computeTemplateDigest({ template, data }, 'sha1', endian);
  return { pcr: opts.pcr ?? 10, digest, template, data };
}

/** A deterministic stream of synthetic records. */
export class ImaWorkload {
  readonly #random: () => number;
  readonly #template: WorkloadTemplate;
  readonly #fileHash: BankName;
  readonly #violationRate: number;
  readonly #signedRate: number;
  readonly #pcr: number;
  readonly #endian: Endian;
  #bootAggregate: Uint8Array | false;
  #count = 0;

  constructor(opts: WorkloadOptions) {
    this.#random = mulberry32(opts.seed);
    this.#template = opts.template ?? 'ima-ng';
    this.#fileHash = opts.fileHash ?? 'sha256';
    this.#violationRate = opts.violationRate ?? 0;
    this.#signedRate = opts.signedRate ?? 0.5;
    this.#pcr = opts.pcr ?? 10;
    this.#endian = opts.endian ?? 'le';
    this.#bootAggregate = opts.bootAggregate ?? this.#bytes(DIGEST_SIZE[this.#fileHash]);
  }

  /** Records generated so far. */
  get recordCount(): number {
    return this.#count;
  }

  /** The next record. */
  next(): ImaRecord {
    this.#count++;
    const aggregate = this.#bootAggregate;
    if (aggregate !== false) {
      this.#bootAggregate = false;
      // The boot_aggregate record uses the configured template (`ima_template=`); ima-buf is only
      // forced for buffer measurements, so an ima-buf workload runs on ima-ng.
      const template = this.#template === 'mixed' ? 'ima-sig' : this.#template === 'ima-buf' ? 'ima-ng' : this.#template;
      const fields = [digestNgField(this.#fileHash, aggregate), nameNgField('boot_aggregate')];
      return this.#record(template, template === 'ima-sig' ? [...fields, new Uint8Array(0)] : fields, false);
    }
    const template = this.#nextTemplate();
    if (template === 'ima-buf') return this.#bufferRecord();
    const violation = this.#chance(this.#violationRate);
    const fileDigest = violation ? new Uint8Array(DIGEST_SIZE[this.#fileHash]) : this.#bytes(DIGEST_SIZE[this.#fileHash]);
    const fields = [digestNgField(this.#fileHash, fileDigest), nameNgField(this.#path())];
    if (template === 'ima-sig') fields.push(!violation && this.#chance(this.#signedRate) ? this.#signature() : new Uint8Array(0));
    return this.#record(template, fields, violation);
  }

  /** The next `count` records. */
  *records(count: number): Generator<ImaRecord> {
    for (let i = 0; i < count; i++) yield this.next();
  }

  #record(template: string, fields: Uint8Array[], violation: boolean): ImaRecord {
    return makeRecord(template, fields, { pcr: this.#pcr, violation, endian: this.#endian });
  }

  #nextTemplate(): 'ima-ng' | 'ima-sig' | 'ima-buf' {
    if (this.#template !== 'mixed') return this.#template;
    return this.#chance(0.2) ? 'ima-buf' : 'ima-sig';
  }

  #bufferRecord(): ImaRecord {
    const kexec = this.#chance(0.5);
    const buf = kexec
      ? latin1Bytes(`BOOT_IMAGE=/boot/vmlinuz-6.1.0-${this.#pick(['56', '57', '58'])}-amd64 root=UUID=${this.#hex(16)} ro quiet`)
      : concatBytes([Uint8Array.of(0x30, 0x82, 0x03, 0x00), this.#bytes(764)]);
    const name = kexec ? 'kexec-cmdline' : this.#pick(KEYRINGS);
    return this.#record('ima-buf', [digestNgField(this.#fileHash, bankHash(this.#fileHash, buf)), nameNgField(name), buf], false);
  }

  /**
   * A `security.ima` v2 signature xattr: type 0x03 (EVM_IMA_XATTR_DIGSIG), version 2, hash algo 4
   * (HASH_ALGO_SHA256), 4-byte key id, big-endian u16 size, an ECDSA-P256-sized DER signature.
   */
  #signature(): Uint8Array {
    const sig = this.#bytes(70 + (this.#random() % 3));
    return concatBytes([Uint8Array.of(0x03, 0x02, 0x04), this.#bytes(4), Uint8Array.of(sig.length >> 8, sig.length & 0xff), sig]);
  }

  #path(): string {
    return `${this.#pick(DIRS)}/${this.#pick(STEMS)}${this.#random() % 4 === 0 ? `-${this.#random() % 100}` : ''}${this.#pick(SUFFIXES)}`;
  }

  #pick<T>(items: readonly T[]): T {
    return items[this.#random() % items.length] as T;
  }

  #chance(rate: number): boolean {
    return rate > 0 && this.#random() / 0x1_0000_0000 < rate;
  }

  #bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      const v = this.#random();
      for (let j = 0; j < 4 && i + j < n; j++) out[i + j] = (v >>> (8 * j)) & 0xff;
    }
    return out;
  }

  #hex(n: number): string {
    return Buffer.from(this.#bytes(n)).toString('hex');
  }
}
