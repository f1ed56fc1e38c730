/**
 * Keylime's exclude list as JavaScript: the entries joined into one expression
 * `(e1)|(e2)|...` and matched with Python's `re.match`, i.e. anchored at the start of the path
 * and not at its end (keylime/common/validators.py `valid_exclude_list`, keylime/ima/ima.py
 * `_validate_ima_ng`).
 *
 * The joined expression is translated from Python's `re` syntax (str patterns, no flags) to a
 * JavaScript `u`-mode expression with the same meaning, token by token, because the two dialects
 * differ where it matters for paths:
 * - `\d`, `\w`, `\s`, `\b` are Unicode-aware in Python, ASCII (or differently Unicode) in JS;
 * - `.` excludes only `\n` in Python, also `\r`, U+2028, U+2029 in JS;
 * - `$` matches before a final `\n` in Python, `\Z` only at the end; JS `$` only at the end;
 * - `(?P<name>…)`, `(?P=name)`, `{,n}`, a lone `{`, `}` or `]`, `\a`, `\U…`, escaped punctuation
 *   that `u` mode refuses, and `]` first in a class are Python spellings JS writes otherwise.
 * - a quantified lookaround (`(?=a)*`) is valid Python; `u` mode wants it in a group.
 * What Python accepts but JS cannot express is refused (`POLICY_REGEX_UNSUPPORTED`): scoped or
 * global inline flags, conditionals, atomic groups, possessive quantifiers, `\N{…}`, and `\W`, `\S`
 * inside a class. What Python itself refuses is `POLICY_BAD_REGEX` (Keylime's `valid_regex` fails
 * on the `re.error`), also where JS would accept it: a lookbehind whose width is not fixed
 * (Python 3.11 re/_parser.py `_parse`, "look-behind requires fixed-width pattern", widths as
 * `SubPattern.getwidth`), a reference inside a lookbehind to a group defined in it, and a
 * quantifier after an anchor (`\b*`: "nothing to repeat") or after a quantifier ("multiple repeat").
 */
import { PolicyError } from './errors.js';

/** Python's `\w` for str patterns: alphanumeric (str.isalnum: L*, N*) or underscore. */
const WORD = '\\p{L}\\p{N}_';
/** Python's `\s` for str patterns (str.isspace): ASCII whitespace, \x1c-\x1f, \x85 and Unicode Zs/line breaks. */
const SPACE = '\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
/** Characters that must be escaped to be literal outside a class in `u` mode. */
const SYNTAX = new Set('^$\\.*+?()[]{}|/');
/** Python's MAXREPEAT bound on `{m,n}` (sre_constants). */
const MAX_REPEAT = 4294967295;

function bad(message: string, offset: number, source: string): PolicyError {
  return new PolicyError('POLICY_BAD_REGEX', `exclude expression: ${message} at offset ${offset}`, { field: 'excludes', offset, got: source.slice(0, 200) });
}

function unsupported(what: string, offset: number, source: string): PolicyError {
  return new PolicyError('POLICY_REGEX_UNSUPPORTED', `exclude expression: ${what} (offset ${offset}) has no JavaScript equivalent`, {
    field: 'excludes',
    offset,
    got: source.slice(0, 200),
  });
}

const literal = (cp: number): string => `\\u{${cp.toString(16)}}`;

/** Python's zero-width escapes outside a class, in JS (a word boundary as Python's `\w` sees it). */
const ANCHOR_ESCAPES: Readonly<Record<string, string>> = {
  A: '^',
  Z: '(?![\\s\\S])',
  b: `(?:(?<=[${WORD}])(?![${WORD}])|(?<![${WORD}])(?=[${WORD}]))`,
  // Python before 3.14 never matches \B in an empty string (sre `SRE_AT_NON_BOUNDARY`).
  B: `(?:(?<=[${WORD}])(?=[${WORD}])|(?<![${WORD}])(?![${WORD}])(?!(?<![\\s\\S])(?![\\s\\S])))`,
};

/** Python's one-character class escapes outside a class, in JS. */
const SET_ESCAPES: Readonly<Record<string, string>> = {
  d: '\\p{Nd}',
  D: '\\P{Nd}',
  w: `[${WORD}]`,
  W: `[^${WORD}]`,
  s: `[${SPACE}]`,
  S: `[^${SPACE}]`,
};

/** One item of a character class: a code point or a predefined set (already in JS syntax). */
type ClassItem = { readonly cp: number } | { readonly set: string };

/** Least and most characters a piece of pattern matches (`SubPattern.getwidth`). */
interface Width {
  readonly lo: number;
  readonly hi: number;
}

/** Python caps every width it computes (re/_parser.py `getwidth`). */
const capped = (lo: number, hi: number): Width => ({ lo: Math.min(lo, MAX_REPEAT - 1), hi: Math.min(hi, MAX_REPEAT) });

/** What the last item of a branch is, for the quantifier that may follow it. */
type Last =
  /** Nothing yet (start of a branch), or a quantifier: a quantifier here is an error. */
  | { readonly kind: 'none' | 'repeat' }
  /** An anchor (`^`, `$`, `\A`, `\Z`, `\b`, `\B`): Python cannot repeat it. */
  | { readonly kind: 'anchor' }
  /** An item that can be repeated, its width, and the capturing groups it surely sets. */
  | { readonly kind: 'item'; readonly width: Width; readonly sets: readonly number[] };

/** An open group (or the whole pattern): its kind, its alternatives' widths so far, the branch being read. */
interface Frame {
  readonly kind: 'top' | 'group' | 'lookahead' | 'lookbehind';
  /** Capturing group number, or 0. */
  readonly group: number;
  /** A negative lookaround: its groups are never set after it. */
  readonly negative: boolean;
  /** Groups defined before this one opened (a lookbehind may not refer to later ones). */
  readonly groupsBefore: number;
  alternatives: Width | null;
  branch: Width;
  last: Last;
  /** Capturing groups the branch read so far has surely set (none after a `|`). */
  sets: number[];
}

/** Translator state over one Python pattern. */
class Translator {
  readonly #src: string;
  #at = 0;
  #out = '';
  #groups = 0;
  readonly #frames: Frame[] = [{ kind: 'top', group: 0, negative: false, groupsBefore: 0, alternatives: null, branch: { lo: 0, hi: 0 }, last: { kind: 'none' }, sets: [] }];
  readonly #names = new Map<string, number>();
  /** Width of each closed capturing group, by number (a back-reference matches as many). */
  readonly #groupWidths = new Map<number, Width>();

  constructor(source: string) {
    this.#src = source;
  }

  run(): string {
    const src = this.#src;
    while (this.#at < src.length) this.#token();
    if (this.#frames.length > 1) throw bad('missing ), unterminated subpattern', src.length, src);
    return this.#out;
  }

  get #frame(): Frame {
    return this.#frames[this.#frames.length - 1] as Frame;
  }

  /** Appends the translation of one item that matches `lo..hi` characters. */
  #item(js: string, lo: number, hi = lo): void {
    const frame = this.#frame;
    frame.last = { kind: 'item', width: { lo, hi }, sets: [] };
    frame.branch = capped(frame.branch.lo + lo, frame.branch.hi + hi);
    this.#out += js;
  }

  /** Appends an anchor: matches no character and cannot be repeated. */
  #anchor(js: string): void {
    this.#frame.last = { kind: 'anchor' };
    this.#out += js;
  }

  /** Whether capturing group `group` is open (not yet closed) here. */
  #isOpen(group: number): boolean {
    return this.#frames.some((f) => f.group === group);
  }

  /** A quantifier `{min,max}` (max Infinity if unbounded) applies to the last item. */
  #repeat(min: number, max: number, start: number): void {
    const frame = this.#frame;
    const last = frame.last;
    if (last.kind === 'repeat') throw bad('multiple repeat', start, this.#src);
    if (last.kind !== 'item') throw bad('nothing to repeat', start, this.#src);
    const { lo, hi } = last.width;
    // The item's width was added to the branch: replace it by the repeated width.
    frame.branch = capped(frame.branch.lo - lo + lo * min, frame.branch.hi - hi + (max === Infinity ? (hi === 0 ? 0 : MAX_REPEAT) : hi * max));
    // An optional item may set none of its groups.
    if (min === 0) frame.sets = frame.sets.filter((g) => !last.sets.includes(g));
    frame.last = { kind: 'repeat' };
  }

  /** `|`: the branch read so far is one alternative of the group. */
  #alternative(): void {
    const frame = this.#frame;
    const b = frame.branch;
    frame.alternatives = frame.alternatives === null ? b : { lo: Math.min(frame.alternatives.lo, b.lo), hi: Math.max(frame.alternatives.hi, b.hi) };
    frame.branch = { lo: 0, hi: 0 };
    frame.last = { kind: 'none' };
    frame.sets = [];
    this.#out += '|';
  }

  #openGroup(kind: Frame['kind'], group: number, js: string, negative = false): void {
    this.#frames.push({ kind, group, negative, groupsBefore: this.#groups - (group === 0 ? 0 : 1), alternatives: null, branch: { lo: 0, hi: 0 }, last: { kind: 'none' }, sets: [] });
    this.#out += js;
  }

  #closeGroup(start: number): void {
    const frame = this.#frames.pop();
    if (frame === undefined || frame.kind === 'top') throw bad('unbalanced parenthesis', start, this.#src);
    const b = frame.branch;
    const a = frame.alternatives;
    const width = a === null ? b : capped(Math.min(a.lo, b.lo), Math.max(a.hi, b.hi));
    if (frame.kind === 'lookbehind' && width.lo !== width.hi) throw bad('look-behind requires fixed-width pattern', start, this.#src);
    if (frame.group !== 0) this.#groupWidths.set(frame.group, width);
    // A lookaround sits in a non-capturing group so that it may be repeated in `u` mode, as in Python.
    const closing = frame.kind === 'lookahead' || frame.kind === 'lookbehind' ? '))' : ')';
    const outer = this.#frame;
    const item = frame.kind === 'lookahead' || frame.kind === 'lookbehind' ? { lo: 0, hi: 0 } : width;
    // A group of one branch surely sets what that branch set; a negative lookaround sets nothing.
    const sets = frame.negative || frame.alternatives !== null ? [] : frame.group === 0 ? frame.sets : [...frame.sets, frame.group];
    outer.sets.push(...sets);
    outer.last = { kind: 'item', width: item, sets };
    outer.branch = capped(outer.branch.lo + item.lo, outer.branch.hi + item.hi);
    this.#out += closing;
  }

  /** A back-reference to a closed group: as wide as the group; not to one defined in the same lookbehind. */
  #backReference(group: number, js: string, start: number): void {
    if (this.#isOpen(group)) throw bad('cannot refer to an open group', start, this.#src);
    for (const f of this.#frames) {
      if (f.kind === 'lookbehind' && group > f.groupsBefore) throw bad('cannot refer to group defined in the same lookbehind subpattern', start, this.#src);
    }
    // JS matches a reference to a group that did not take part as empty, Python fails it.
    if (!this.#frames.some((f) => f.sets.includes(group))) throw unsupported(`a reference to group ${group}, which may not have matched`, start, this.#src);
    const width = this.#groupWidths.get(group) ?? { lo: 0, hi: MAX_REPEAT };
    this.#item(js, width.lo, width.hi);
  }

  #peek(n = 0): string {
    return this.#src[this.#at + n] ?? '';
  }

  #token(): void {
    const src = this.#src;
    const start = this.#at;
    const c = this.#peek();
    this.#at++;
    switch (c) {
      case '\\':
        this.#escape(start);
        return;
      case '[':
        this.#item(this.#class(start), 1);
        return;
      case '(':
        this.#group(start);
        return;
      case ')':
        this.#closeGroup(start);
        return;
      case '.':
        this.#item('[^\\n]', 1);
        return;
      case '$':
        this.#anchor('(?=\\n?(?![\\s\\S]))');
        return;
      case '^':
        this.#anchor('^');
        return;
      case '|':
        this.#alternative();
        return;
      case '*':
      case '+':
      case '?':
        this.#repeat(c === '+' ? 1 : 0, c === '?' ? 1 : Infinity, start);
        this.#out += c;
        this.#afterQuantifier(start);
        return;
      case '{':
        this.#brace(start);
        return;
      default: {
        const cp = src.codePointAt(start) ?? 0;
        this.#at = start + String.fromCodePoint(cp).length;
        this.#item(SYNTAX.has(c) ? `\\${c}` : String.fromCodePoint(cp), 1);
      }
    }
  }

  /** After a quantifier: `?` (lazy) is fine, `+` (possessive, Python 3.11) is not in JS. */
  #afterQuantifier(start: number): void {
    if (this.#peek() === '?') {
      this.#out += '?';
      this.#at++;
    } else if (this.#peek() === '+') {
      throw unsupported('a possessive quantifier', start, this.#src);
    }
  }

  /** `{m,n}` and its Python spellings, or a literal `{` (sre_parse `_parse`, "{"). */
  #brace(start: number): void {
    const m = /^\{(\d*)(,?)(\d*)\}/.exec(this.#src.slice(start));
    if (m === null || m[0] === '{}') {
      this.#item('\\{', 1);
      return;
    }
    const [all, lo = '', comma, hiText = ''] = m;
    const min = lo === '' ? 0 : Number(lo);
    const max = comma === '' ? min : hiText === '' ? Infinity : Number(hiText);
    if (min >= MAX_REPEAT || (max !== Infinity && max >= MAX_REPEAT)) throw bad('the repetition number is too large', start, this.#src);
    if (max < min) throw bad('min repeat greater than max repeat', start, this.#src);
    this.#at = start + all.length;
    this.#repeat(min, max, start);
    this.#out += max === Infinity ? `{${min},}` : `{${min},${max}}`;
    this.#afterQuantifier(start);
  }

  #group(start: number): void {
    const src = this.#src;
    if (this.#peek() !== '?') {
      this.#openGroup('group', ++this.#groups, '(');
      return;
    }
    const kind = this.#peek(1);
    if (kind === ':') {
      this.#at += 2;
      this.#openGroup('group', 0, '(?:');
      return;
    }
    if (kind === '=' || kind === '!') {
      this.#at += 2;
      this.#openGroup('lookahead', 0, `(?:(?${kind}`, kind === '!');
      return;
    }
    if (kind === '<' && (this.#peek(2) === '=' || this.#peek(2) === '!')) {
      this.#openGroup('lookbehind', 0, `(?:(?<${this.#peek(2)}`, this.#peek(2) === '!');
      this.#at += 3;
      return;
    }
    if (kind === '#') {
      const end = src.indexOf(')', this.#at);
      if (end < 0) throw bad('missing ), unterminated comment', start, src);
      this.#at = end + 1;
      return;
    }
    if (kind === 'P') {
      const named = /^\(\?P<([^>]*)>/.exec(src.slice(start));
      if (named !== null) {
        const name = named[1] ?? '';
        if (!/^[\p{L}\p{Nl}_][\p{L}\p{Nl}\p{Mn}\p{Mc}\p{Nd}\p{Pc}]*$/u.test(name)) throw bad(`bad character in group name '${name}'`, start, src);
        if (this.#names.has(name)) throw bad(`redefinition of group name '${name}'`, start, src);
        this.#names.set(name, ++this.#groups);
        this.#at = start + named[0].length;
        this.#openGroup('group', this.#groups, `(?<${name}>`);
        return;
      }
      const ref = /^\(\?P=([^)]*)\)/.exec(src.slice(start));
      if (ref !== null) {
        const name = ref[1] ?? '';
        const group = this.#names.get(name);
        if (group === undefined) throw bad(`unknown group name '${name}'`, start, src);
        this.#at = start + ref[0].length;
        this.#backReference(group, `\\k<${name}>`, start);
        return;
      }
      throw bad('unknown extension ?P', start, src);
    }
    if (kind === '>') throw unsupported('an atomic group (?>…)', start, src);
    if (kind === '(') throw unsupported('a conditional group (?(…)…)', start, src);
    if (/^[aiLmsux-]$/.test(kind)) {
      const flags = /^\(\?[aiLmsux]*(-[imsx]*)?([:)])/.exec(src.slice(start));
      if (flags === null) throw bad('unknown flag', start, src);
      // The joined expression starts with "(", so a global flag is never at its start: Python 3.11
      // refuses that ("global flags not at the start of the expression").
      if (flags[2] === ')') throw bad('global flags not at the start of the expression', start, src);
      throw unsupported('inline flags (?flags:…)', start, src);
    }
    throw bad(`unknown extension ?${kind}`, start, src);
  }

  /** A backslash escape outside a class. */
  #escape(start: number): void {
    const src = this.#src;
    const c = this.#peek();
    if (c === '') throw bad('bad escape (end of pattern)', start, src);
    this.#at++;
    const anchor = ANCHOR_ESCAPES[c];
    if (anchor !== undefined) return this.#anchor(anchor);
    const set = SET_ESCAPES[c];
    if (set !== undefined) return this.#item(set, 1);
    if (c >= '1' && c <= '9') {
      const three = src.slice(start + 1, start + 4);
      if (/^[0-7]{3}$/.test(three) && c <= '7') {
        this.#at = start + 4;
        return this.#item(this.#octal(three, start), 1);
      }
      const digits = /^\d{1,2}/.exec(src.slice(start + 1))?.[0] ?? c;
      const group = Number(digits);
      this.#at = start + 1 + digits.length;
      if (group > this.#groups) throw bad(`invalid group reference ${group}`, start, src);
      return this.#backReference(group, `\\${group}(?:)`, start);
    }
    this.#item(literal(this.#codePoint(c, start, false)), 1);
  }

  #octal(digits: string, start: number): string {
    const value = parseInt(digits, 8);
    if (value > 0o377) throw bad(`octal escape value \\${digits} outside of range 0-0o377`, start, this.#src);
    return literal(value);
  }

  /**
   * The code point of a character escape `\c` (its first character already consumed): control
   * escapes, `\x`, `\u`, `\U`, octal, or escaped punctuation. ASCII letters and digits without a
   * meaning are errors in Python ("bad escape").
   */
  #codePoint(c: string, start: number, inClass: boolean): number {
    const src = this.#src;
    const simple: Record<string, number> = { a: 7, f: 12, n: 10, r: 13, t: 9, v: 11 };
    const known = simple[c];
    if (known !== undefined) return known;
    if (inClass && c === 'b') return 8;
    const widths: Record<string, number> = { x: 2, u: 4, U: 8 };
    const width = widths[c];
    if (width !== undefined) {
      const hex = src.slice(this.#at, this.#at + width);
      if (!new RegExp(`^[0-9a-fA-F]{${width}}$`).test(hex)) throw bad(`incomplete escape \\${c}${hex}`, start, src);
      this.#at += width;
      const cp = parseInt(hex, 16);
      if (cp > 0x10ffff) throw bad(`bad escape \\${c}${hex}`, start, src);
      return cp;
    }
    if (c === 'N') throw unsupported('a named character \\N{…}', start, src);
    if (c === '0' || (inClass && c >= '1' && c <= '7')) {
      const digits = /^[0-7]{1,3}/.exec(src.slice(start + 1))?.[0] ?? c;
      this.#at = start + 1 + digits.length;
      const value = parseInt(digits, 8);
      if (value > 0o377) throw bad(`octal escape value \\${digits} outside of range 0-0o377`, start, src);
      return value;
    }
    if (/^[A-Za-z0-9]$/.test(c)) throw bad(`bad escape \\${c}`, start, src);
    const cp = src.codePointAt(start + 1) ?? 0;
    this.#at = start + 1 + String.fromCodePoint(cp).length;
    return cp;
  }

  /** A character class `[...]` (sre_parse `_parse`, "["), emitted with every literal as `\u{…}`. */
  #class(start: number): string {
    const src = this.#src;
    let negate = false;
    if (this.#peek() === '^') {
      negate = true;
      this.#at++;
    }
    const items: string[] = [];
    let first = true;
    for (;;) {
      const c = this.#peek();
      if (c === '') throw bad('unterminated character set', start, src);
      if (c === ']' && !first) {
        this.#at++;
        break;
      }
      first = false;
      const lo = this.#classItem();
      if (this.#peek() === '-' && this.#peek(1) !== ']' && this.#peek(1) !== '') {
        this.#at++;
        const hiAt = this.#at;
        const hi = this.#classItem();
        if (!('cp' in lo) || !('cp' in hi)) throw bad('bad character range', hiAt, src);
        if (hi.cp < lo.cp) throw bad('bad character range', hiAt, src);
        items.push(`${literal(lo.cp)}-${literal(hi.cp)}`);
      } else {
        items.push('cp' in lo ? literal(lo.cp) : lo.set);
      }
    }
    // An empty JS class never matches; Python has none (a first `]` is literal), so items exist.
    return `[${negate ? '^' : ''}${items.join('')}]`;
  }

  #classItem(): ClassItem {
    const src = this.#src;
    const start = this.#at;
    const c = this.#peek();
    this.#at++;
    if (c !== '\\') {
      const cp = src.codePointAt(start) ?? 0;
      this.#at = start + String.fromCodePoint(cp).length;
      return { cp };
    }
    const e = this.#peek();
    if (e === '') throw bad('bad escape (end of pattern)', start, src);
    this.#at++;
    switch (e) {
      case 'd':
        return { set: '\\p{Nd}' };
      case 'D':
        return { set: '\\P{Nd}' };
      case 'w':
        return { set: WORD };
      case 's':
        return { set: SPACE };
      case 'W':
      case 'S':
        throw unsupported(`\\${e} inside a character class`, start, src);
      default:
        return { cp: this.#codePoint(e, start, true) };
    }
  }
}

/** Longest exclude entry accepted (PATH_MAX-sized patterns are plenty). */
export const MAX_EXCLUDE_LENGTH = 4096;
/** Most exclude entries accepted. */
export const MAX_EXCLUDES = 10_000;

/**
 * The JavaScript source equivalent to the Python pattern `source` as `re.match` uses it, anchored
 * at the start. Throws `POLICY_BAD_REGEX` or `POLICY_REGEX_UNSUPPORTED`.
 */
export function translatePythonRegex(source: string): string {
  return `^(?:${new Translator(source).run()})`;
}

/**
 * The exclude list as one anchored expression, exactly as Keylime joins it, or null for an empty
 * list (nothing excluded).
 */
export function compileExcludes(excludes: readonly string[]): RegExp | null {
  if (excludes.length === 0) return null;
  const joined = `(${excludes.join(')|(')})`;
  const js = translatePythonRegex(joined);
  try {
    return new RegExp(js, 'u');
  } catch (e) {
    throw new PolicyError('POLICY_BAD_REGEX', `exclude expression: ${e instanceof Error ? e.message : String(e)}`, { field: 'excludes', got: joined.slice(0, 200) }, { cause: e });
  }
}
