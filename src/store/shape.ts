/**
 * Narrowing of decoded CBOR (`unknown`) into the store's value types. A value that does not have
 * its key's shape is corruption (or a writer bug), reported as `STORE_CORRUPT` naming key and field.
 */
import { StoreError } from './errors.js';

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array);
}

/** Typed field access on one decoded CBOR map. */
export class FieldReader {
  readonly #fields: Record<string, unknown>;
  /** Printable key (and field path) the map was read from, for errors. */
  readonly where: string;

  /** Narrows `value` to a map, or throws `STORE_CORRUPT` naming `where`. */
  constructor(value: unknown, where: string) {
    if (!isPlainObject(value)) throw FieldReader.corrupt(where, 'is not a map');
    this.#fields = value;
    this.where = where;
  }

  /** The error every failed check raises; `where` starts with the LevelDB key. */
  static corrupt(where: string, problem: string): StoreError {
    const key = where.split(' ')[0] ?? where;
    return new StoreError('STORE_CORRUPT', `${where} ${problem}`, { key });
  }

  #fail(name: string, want: string): never {
    throw FieldReader.corrupt(`${this.where} .${name}`, `is not ${want}`);
  }

  /** True if the map has the field (a field added to a value later is absent from older values). */
  has(name: string): boolean {
    return Object.hasOwn(this.#fields, name);
  }

  /** True if the field is CBOR null. */
  isNull(name: string): boolean {
    return this.#fields[name] === null;
  }

  /** A non-negative safe integer (indexes, counts, millisecond times). */
  count(name: string): number {
    const value = this.#fields[name];
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) this.#fail(name, 'a non-negative integer');
    return value;
  }

  /** A byte string, of exactly `size` bytes if given. */
  bytes(name: string, size?: number): Uint8Array {
    const value = this.#fields[name];
    if (!(value instanceof Uint8Array) || (size !== undefined && value.length !== size)) {
      this.#fail(name, size === undefined ? 'a byte string' : `a byte string of ${size} bytes`);
    }
    return value;
  }

  /** A text string. */
  text(name: string): string {
    const value = this.#fields[name];
    if (typeof value !== 'string') this.#fail(name, 'a text string');
    return value;
  }

  /** A text string from a closed set. */
  oneOf<T extends string>(name: string, allowed: readonly T[]): T {
    const value = this.#fields[name];
    const match = allowed.find((a) => a === value);
    if (match === undefined) this.#fail(name, `one of ${allowed.join(', ')}`);
    return match;
  }

  /** A nested map. */
  object(name: string): FieldReader {
    return new FieldReader(this.#fields[name], `${this.where} .${name}`);
  }

  /** An array whose items are read with `item`. */
  array<T>(name: string, item: (value: unknown, where: string) => T): T[] {
    const value = this.#fields[name];
    if (!Array.isArray(value)) this.#fail(name, 'an array');
    return value.map((v: unknown, i) => item(v, `${this.where} .${name}[${i}]`));
  }

  /** Names of the map's fields, in stored order. */
  names(): string[] {
    return Object.keys(this.#fields);
  }
}
