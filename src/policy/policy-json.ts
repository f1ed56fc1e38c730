/**
 * A policy file's JSON, read from its bytes in one pass, with the digest maps (`digests`,
 * `keyrings`, `ima-buf` at the top level) going straight into compact indexes: a million-digest
 * policy through JSON.parse made a million strings and arrays first (about 250 MB more, and most of
 * the load time in parsing and collecting them; bench/policy.ts).
 *
 * The grammar is JSON's (RFC 8259), as strict as JSON.parse: what JSON.parse refuses is
 * `POLICY_BAD_JSON` here. Values come out as JSON.parse makes them (a `__proto__` key is an own
 * property; the last of repeated keys wins), except that a top-level digest map that is an object
 * comes out as a {@link ScannedDigestMap}. A list of the map that is not plain hex strings is read
 * as a value and checked by the caller's check ({@link DigestListRules}), so its errors are the same as for a parsed
 * document; the first such error is kept in the map, to be thrown in the caller's order of checks.
 */
import { DigestIndexBuilder, type DigestIndex } from './digest-index.js';
import { PolicyError } from './errors.js';

/** The top-level fields whose objects are read into digest indexes. */
const DIGEST_MAPS = new Set(['digests', 'keyrings', 'ima-buf']);

/** Deepest nesting accepted (Python's json stops near its recursion limit, 1000). */
const MAX_DEPTH = 512;

/** A digest map read from the bytes: its index, how many names, and the first error of its lists. */
export class ScannedDigestMap {
  constructor(
    readonly index: DigestIndex,
    readonly names: number,
    readonly error: PolicyError | null,
  ) {}
}

/** How the caller checks one list of a digest map. */
export interface DigestListRules {
  /** Throws the schema error of a list (or of its name); returns the list as hex strings. */
  readonly check: (field: string, name: string, list: unknown) => readonly string[];
  /** The bounds `check` enforces: within them, a list of plain hex strings is accepted without it. */
  readonly maxDigests: number;
  readonly maxName: number;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const NUMBER = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/;

function isHexDigit(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66);
}

class Scanner {
  readonly #b: Uint8Array;
  readonly #buf: Buffer;
  readonly #rules: DigestListRules;
  #at = 0;
  #depth = 0;

  constructor(bytes: Uint8Array, rules: DigestListRules) {
    this.#b = bytes;
    this.#buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
    this.#rules = rules;
  }

  document(): unknown {
    // A UTF-8 byte-order mark is dropped, as TextDecoder drops it.
    if (this.#b[0] === 0xef && this.#b[1] === 0xbb && this.#b[2] === 0xbf) this.#at = 3;
    this.#ws();
    const value = this.#value(true);
    this.#ws();
    if (this.#at !== this.#b.length) throw this.#fail('unexpected data after the JSON value');
    return value;
  }

  #fail(message: string): PolicyError {
    return new PolicyError('POLICY_BAD_JSON', `the policy is not JSON: ${message} at byte ${this.#at}`, { field: 'policy', offset: this.#at });
  }

  #ws(): void {
    const b = this.#b;
    for (let c = b[this.#at]; c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09; c = b[this.#at]) this.#at++;
  }

  #expect(c: number, what: string): void {
    if (this.#b[this.#at] !== c) throw this.#fail(`expected ${what}`);
    this.#at++;
  }

  #value(top = false): unknown {
    const c = this.#b[this.#at];
    if (c === 0x7b) return this.#nested(() => this.#object(top));
    if (c === 0x5b) return this.#nested(() => this.#array());
    if (c === QUOTE) return this.#string();
    if (c === 0x74) return this.#literal('true', true);
    if (c === 0x66) return this.#literal('false', false);
    if (c === 0x6e) return this.#literal('null', null);
    if (c === 0x2d || (c !== undefined && c >= 0x30 && c <= 0x39)) return this.#number();
    throw this.#fail(c === undefined ? 'unexpected end of data' : 'unexpected character');
  }

  #nested<T>(read: () => T): T {
    if (++this.#depth > MAX_DEPTH) throw this.#fail(`nested deeper than ${MAX_DEPTH}`);
    const value = read();
    this.#depth--;
    return value;
  }

  #literal<T>(text: string, value: T): T {
    for (let i = 0; i < text.length; i++) if (this.#b[this.#at + i] !== text.charCodeAt(i)) throw this.#fail('unexpected character');
    this.#at += text.length;
    return value;
  }

  #number(): number {
    const start = this.#at;
    const b = this.#b;
    for (let c = b[this.#at]; c !== undefined && ((c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2b || c === 0x2e || c === 0x65 || c === 0x45); c = b[this.#at]) this.#at++;
    const text = this.#buf.toString('latin1', start, this.#at);
    if (!NUMBER.test(text)) {
      this.#at = start;
      throw this.#fail('malformed number');
    }
    return Number(text);
  }

  #string(): string {
    const b = this.#b;
    const start = ++this.#at;
    let escaped = false;
    for (;;) {
      const c = b[this.#at];
      if (c === undefined) throw this.#fail('unterminated string');
      if (c === QUOTE) break;
      if (c < 0x20) throw this.#fail('control character in string');
      if (c === BACKSLASH) {
        escaped = true;
        const e = b[this.#at + 1];
        if (e === 0x75) {
          for (let i = 2; i < 6; i++) {
            const h = b[this.#at + i] ?? 0;
            if (!isHexDigit(h) && !(h >= 0x41 && h <= 0x46)) throw this.#fail('bad \\u escape');
          }
          this.#at += 6;
          continue;
        }
        if (e === undefined || !'"\\/bfnrt'.includes(String.fromCharCode(e))) throw this.#fail('bad escape');
        this.#at += 2;
        continue;
      }
      this.#at++;
    }
    const end = this.#at++;
    // Without escapes the bytes are the text; with them JSON.parse decodes exactly what JSON means.
    return escaped ? (JSON.parse(this.#buf.toString('utf8', start - 1, end + 1)) as string) : this.#buf.toString('utf8', start, end);
  }

  /** The items of an array or object: `item` reads each, separated by commas, up to `close`. */
  #sequence(close: number, item: () => void): void {
    this.#at++;
    this.#ws();
    if (this.#b[this.#at] === close) {
      this.#at++;
      return;
    }
    for (;;) {
      this.#ws();
      item();
      this.#ws();
      const c = this.#b[this.#at++];
      if (c === close) return;
      if (c !== 0x2c) {
        this.#at--;
        throw this.#fail(`expected ',' or '${String.fromCharCode(close)}'`);
      }
    }
  }

  #array(): unknown[] {
    const out: unknown[] = [];
    this.#sequence(0x5d, () => out.push(this.#value()));
    return out;
  }

  /** Members as JSON.parse sets them: own properties, `__proto__` included, the last repeat winning. */
  #members(read: (key: string) => unknown): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    this.#sequence(0x7d, () => {
      if (this.#b[this.#at] !== QUOTE) throw this.#fail('expected a property name');
      const key = this.#string();
      this.#ws();
      this.#expect(0x3a, "':'");
      this.#ws();
      Object.defineProperty(out, key, { value: read(key), writable: true, enumerable: true, configurable: true });
    });
    return out;
  }

  #object(top: boolean): Record<string, unknown> {
    return this.#members((key) => (top && DIGEST_MAPS.has(key) && this.#b[this.#at] === 0x7b ? this.#nested(() => this.#digestMap(key)) : this.#value()));
  }

  #digestMap(field: string): ScannedDigestMap {
    const builder = new DigestIndexBuilder();
    let error: PolicyError | null = null;
    const names = new Set<string>();
    this.#members((name) => {
      names.add(name);
      const start = this.#at;
      if (error === null && this.#hexList(builder, name)) return null;
      // Not a plain list of hex strings: read it as a value, and let the caller's check say why.
      this.#at = start;
      const list = this.#value();
      if (error !== null) return null;
      try {
        const hex = this.#rules.check(field, name, list);
        builder.begin(name);
        for (const d of hex) builder.addHex(d);
      } catch (e) {
        if (!(e instanceof PolicyError)) throw e;
        error = e;
      }
      return null;
    });
    return new ScannedDigestMap(builder.build(), names.size, error);
  }

  /**
   * A list of 40..128-digit lowercase hex strings with no escapes, read into the builder; false
   * (and nothing consumed that matters: the caller rewinds) for anything else, an empty or too
   * long list included, so that the caller's check names the error.
   */
  #hexList(builder: DigestIndexBuilder, name: string): boolean {
    const b = this.#b;
    if (b[this.#at] !== 0x5b) return false;
    this.#at++;
    this.#ws();
    if (b[this.#at] === 0x5d) return false;
    builder.begin(name);
    let count = 0;
    for (;;) {
      if (b[this.#at] !== QUOTE) return false;
      const start = this.#at + 1;
      const end = b.indexOf(QUOTE, start);
      const length = end - start;
      if (end < 0 || length < 40 || length > 128 || !builder.addHexBytes(b, start, end)) return false;
      this.#at = end + 1;
      if (++count > this.#rules.maxDigests) return false;
      this.#ws();
      const c = b[this.#at++];
      if (c === 0x5d) return name.length <= this.#rules.maxName;
      if (c !== 0x2c) return false;
      this.#ws();
    }
  }
}

/** Parses a policy file's bytes, its digest maps read with `rules` (see the module comment). */
export function parsePolicyBytes(bytes: Uint8Array, rules: DigestListRules): unknown {
  return new Scanner(bytes, rules).document();
}
