/**
 * Loading policies: what Keylime's schema accepts loads, every violation of it is a typed
 * `POLICY_*` error naming the field, exclude expressions behave as Python's `re.match` on the
 * joined list (expected values checked with CPython 3.11), and sizes are bounded.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { loadRuntimePolicy, parseRuntimePolicy, PolicyError } from '../../src/policy/index.js';
import { emptyPolicy } from './_policy.js';
import { compileExcludes, keyIdOf, MAX_DIGESTS_PER_ENTRY, MAX_POLICY_BYTES } from '../../src/testing/index.js';

function refuses(value: unknown, code: string, field?: string): void {
  assert.throws(
    () => loadRuntimePolicy(value),
    (e: PolicyError) => {
      assert.equal(e.code, code, e.message);
      if (field !== undefined) assert.equal(e.details.field, field, e.message);
      return true;
    },
  );
}

describe('schema', () => {
  it("Keylime's EMPTY_RUNTIME_POLICY loads, with extra top-level fields, and inside a DSSE envelope", () => {
    const p = loadRuntimePolicy(emptyPolicy({ rules: 'anything' }));
    assert.equal(p.digests.size, 0);
    assert.equal(p.exclude, null);
    assert.equal(p.logHashAlg, 'sha1');
    const payload = Buffer.from(JSON.stringify(emptyPolicy({ digests: { '/a': ['ab'.repeat(20)] } }))).toString('base64');
    assert.deepEqual(loadRuntimePolicy({ payloadType: 'application/vnd.keylime+json', payload, signatures: [] }).digests.hexDigests('/a'), ['ab'.repeat(20)]);
  });

  it('each schema violation names its field', () => {
    refuses([], 'POLICY_SCHEMA', 'policy');
    refuses(emptyPolicy({ meta: undefined }), 'POLICY_SCHEMA', 'meta');
    refuses(emptyPolicy({ meta: { version: 1 } }), 'POLICY_SCHEMA', 'meta.generator');
    refuses(emptyPolicy({ meta: { version: 1, generator: 4 } }), 'POLICY_SCHEMA', 'meta.generator');
    refuses(emptyPolicy({ meta: { version: '1', generator: 1 } }), 'POLICY_SCHEMA', 'meta.version');
    refuses(emptyPolicy({ release: -1 }), 'POLICY_SCHEMA', 'release');
    refuses(emptyPolicy({ release: true }), 'POLICY_SCHEMA', 'release');
    refuses(emptyPolicy({ digests: [] }), 'POLICY_SCHEMA', 'digests');
    refuses(emptyPolicy({ digests: { '/a': [] } }), 'POLICY_SCHEMA', 'digests["/a"]');
    refuses(emptyPolicy({ digests: { '/a': ['AB'.repeat(20)] } }), 'POLICY_SCHEMA', 'digests["/a"][0]');
    refuses(emptyPolicy({ digests: { '/a': ['ab'.repeat(19)] } }), 'POLICY_SCHEMA', 'digests["/a"][0]');
    refuses(emptyPolicy({ keyrings: { k: 'ab'.repeat(20) } }), 'POLICY_SCHEMA', 'keyrings["k"]');
    refuses(emptyPolicy({ 'ima-buf': null }), 'POLICY_SCHEMA', 'ima-buf');
    refuses(emptyPolicy({ excludes: [1] }), 'POLICY_SCHEMA', 'excludes[0]');
    refuses(emptyPolicy({ ima: { ignored_keyrings: [], log_hash_alg: 'md5', dm_policy: null } }), 'POLICY_SCHEMA', 'ima.log_hash_alg');
    refuses(emptyPolicy({ ima: { ignored_keyrings: [], log_hash_alg: 'sha1', dm_policy: {} } }), 'POLICY_SCHEMA', 'ima.dm_policy');
    refuses(emptyPolicy({ ima: { log_hash_alg: 'sha1', dm_policy: null } }), 'POLICY_SCHEMA', 'ima.ignored_keyrings');
    refuses(emptyPolicy({ 'verification-keys': [] }), 'POLICY_SCHEMA', 'verification-keys');
    refuses(emptyPolicy({ meta: { version: 2, generator: 1 } }), 'POLICY_VERSION', 'meta.version');
  });

  it('text that is not JSON, and a DSSE payload that is not', () => {
    assert.throws(() => parseRuntimePolicy('{"meta":'), { code: 'POLICY_BAD_JSON' });
    refuses({ payload: '!!!' }, 'POLICY_BAD_JSON', 'payload');
  });

  it('absurd sizes are refused before they take memory', () => {
    assert.throws(() => parseRuntimePolicy(new Uint8Array(MAX_POLICY_BYTES + 1)), { code: 'POLICY_TOO_LARGE' });
    refuses(emptyPolicy({ digests: { '/a': Array.from({ length: MAX_DIGESTS_PER_ENTRY + 1 }, () => 'ab'.repeat(20)) } }), 'POLICY_TOO_LARGE', 'digests["/a"]');
    refuses(emptyPolicy({ digests: { ['/'.repeat(4097)]: ['ab'.repeat(20)] } }), 'POLICY_TOO_LARGE');
    refuses(emptyPolicy({ excludes: ['a'.repeat(4097)] }), 'POLICY_TOO_LARGE', 'excludes[0] length');
  });
});

describe('verification-keys', () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
  const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey;
  const b64 = (k: typeof rsa): string => k.export({ type: 'spki', format: 'der' }).toString('base64');

  it('the ImaKeyring JSON string, once or twice encoded, keyids given or computed', () => {
    const once = JSON.stringify({ pubkeys: [b64(rsa), b64(ec)], keyids: [0x11223344] });
    const p = loadRuntimePolicy(emptyPolicy({ 'verification-keys': once }));
    assert.deepEqual(p.keys.map((k) => k.keyId), [0x11223344, keyIdOf(ec)]);
    assert.deepEqual(loadRuntimePolicy(emptyPolicy({ 'verification-keys': JSON.stringify(once) })).keys.length, 2);
  });

  it('what does not decode to RSA/EC keys is POLICY_BAD_KEY', () => {
    const ed = generateKeyPairSync('ed25519').publicKey;
    for (const text of ['nope', '[]', JSON.stringify({ pubkeys: ['@@'] }), JSON.stringify({ pubkeys: ['AAAA'] }), JSON.stringify({ pubkeys: [b64(ed)] }), JSON.stringify({ pubkeys: [b64(rsa)], keyids: ['x'] })]) {
      refuses(emptyPolicy({ 'verification-keys': text }), 'POLICY_BAD_KEY', 'verification-keys');
    }
  });
});

describe('exclude expressions as Python re.match on "(e1)|(e2)|..."', () => {
  const matches = (excludes: string[], path: string): boolean => compileExcludes(excludes)?.test(path) ?? false;

  it('match at the start, not necessarily to the end', () => {
    assert.equal(matches(['/tmp/.*', '/var/log/'], '/tmp/x'), true);
    assert.equal(matches(['/tmp/.*', '/var/log/'], '/usr/var/log/'), false);
    assert.equal(matches(['/tmp/.*', '/var/log/'], '/var/logx'), false);
    assert.equal(matches(['/var/log/'], '/var/log/syslog'), true);
  });

  it('Python meanings: Unicode \\d and \\w\\b, $ before a final newline, . across \\r, {,n}, named groups, literal { and ]', () => {
    const cases: Array<[string, string, boolean]> = [
      ['/data/\\d+$', '/data/١٢', true],
      ['/etc/passwd$', '/etc/passwd\n', true],
      ['/etc/passwd$', '/etc/passwd2', false],
      ['/a.b', '/a\rb', true],
      ['/a.b', '/a\nb', false],
      ['/x{,3}y', '/xxy', true],
      ['(?P<n>a)(?P=n)', 'aa', true],
      ['/a{', '/a{', true],
      ['[]x]', ']', true],
      ['\\w+\\b', 'é', true],
      ['/usr/\\S+\\.so', '/usr/lib/x.so', true],
      ['a\\Z', 'a\n', false],
      ['\\x41\\u00e9\\101', 'AéA', true],
      ['\\-\\#\\ ', '-# ', true],
    ];
    for (const [pattern, path, want] of cases) assert.equal(matches([pattern], path), want, `${pattern} on ${JSON.stringify(path)}`);
  });

  it('the list is joined before it is parsed, as Keylime joins it', () => {
    // "a)|(b" is no expression alone, but "(a)|(b)" is one: Python accepts it, so do we.
    assert.equal(matches(['a)|(b'], 'b'), true);
  });

  it('what Python refuses is POLICY_BAD_REGEX; what JS cannot say is POLICY_REGEX_UNSUPPORTED', () => {
    for (const bad of ['(', '\\q', '(?i)foo', 'a{3,1}', '(?<n>a)', '[z-a]', '[a', '\\1']) {
      assert.throws(() => compileExcludes([bad]), { code: 'POLICY_BAD_REGEX' }, bad);
    }
    for (const unsupported of ['(?i:foo)', 'a*+', '[\\W]', '(?>a)', '\\N{DIGIT ONE}']) {
      assert.throws(() => compileExcludes([unsupported]), { code: 'POLICY_REGEX_UNSUPPORTED' }, unsupported);
    }
    refuses(emptyPolicy({ excludes: ['('] }), 'POLICY_BAD_REGEX', 'excludes');
  });

  // Each verdict below is Python 3.11's: re.compile('(' + pattern + ')') raises re.error or not.
  it('what JS accepts and Python refuses is POLICY_BAD_REGEX: variable-width lookbehind, references into it, repeated anchors and repeats', () => {
    const refused: Array<[string, string]> = [
      ['/a(?<=a|bc)', 'look-behind requires fixed-width pattern'],
      ['(?<=a*)/x', 'look-behind requires fixed-width pattern'],
      ['(?<!ab|c)/x', 'look-behind requires fixed-width pattern'],
      ['(?<=a{1,2})', 'look-behind requires fixed-width pattern'],
      ['(?<=ab?)', 'look-behind requires fixed-width pattern'],
      ['(?<=(?:ab|c)d)', 'look-behind requires fixed-width pattern'],
      ['(?<=a|)', 'look-behind requires fixed-width pattern'],
      ['(?<=(a)\\2)', 'cannot refer to group defined in the same lookbehind subpattern'],
      ['(?<=(?P<n>a)(?P=n))', 'cannot refer to group defined in the same lookbehind subpattern'],
      ['\\b*', 'nothing to repeat'],
      ['x\\B{2}', 'nothing to repeat'],
      ['a*{2}', 'multiple repeat'],
    ];
    for (const [pattern, message] of refused) {
      assert.throws(() => compileExcludes([pattern]), (e: unknown) => e instanceof PolicyError && e.code === 'POLICY_BAD_REGEX' && e.message.includes(message), pattern);
    }
    // Fixed widths Python accepts, whatever their spelling.
    for (const fixed of ['/ab(?<=ab|cd)', '(?<=[ab]c)', '(?<=.\\d\\w\\s)', '(?<=a{3,3})', '(?<=(?:ab|cd))', '(?<=\\x41\\u0042)', '(?<=a(?<=bc))', '(?<=a{0})']) {
      assert.ok(compileExcludes([fixed]) instanceof RegExp, fixed);
    }
    assert.equal(matches(['/x/(?<=x/)ab'], '/x/ab'), true);
    assert.equal(matches(['/x/(?<=y/)ab'], '/x/ab'), false);
  });

  it('what Python accepts and u-mode JS refuses is translated: a repeated lookaround', () => {
    assert.equal(matches(['/a(?=b)*b'], '/ab'), true);
    assert.equal(matches(['(?<!x)+/y'], '/y'), true);
    assert.equal(matches(['/a(?!b){2}c'], '/ac'), true);
  });

  it('where the two match differently: \\B never matches an empty string; a reference to a group that may not have matched is refused', () => {
    assert.equal(matches(['\\B'], ''), false);
    assert.equal(matches(['\\B'], ' '), true);
    // Python fails \1 when group 1 did not take part, JS matches it as empty.
    for (const pattern of ['(a)?\\2', '(?:(a)|b)\\2', '(?!(a))\\2', '(?P<n>a)|(?P=n)']) {
      assert.throws(() => compileExcludes([pattern]), { code: 'POLICY_REGEX_UNSUPPORTED' }, pattern);
    }
    assert.equal(matches(['/(a)+\\2'], '/aa'), true);
    assert.equal(matches(['(?=(a))\\2'], 'a'), true);
  });
});

describe('a policy file read from its bytes (digest maps straight into the compact index)', () => {
  const a = 'ab'.repeat(32);
  const b = 'cd'.repeat(20);
  const digestOf = (hex: string): Uint8Array => new Uint8Array(Buffer.from(hex, 'hex'));
  /** A policy text whose `digests` member is `digestsJson` verbatim. */
  const withDigests = (digestsJson: string): string => JSON.stringify(emptyPolicy()).replace('"digests":{}', `"digests":${digestsJson}`);

  it('is JSON exactly where JSON.parse says so: what it refuses is POLICY_BAD_JSON, what it reads loads the same', () => {
    const texts = [
      withDigests(`{"/a":["${a}"],"/b":["${b}","${a}"]}`),
      withDigests(`{ "/a" : [ "${a}" ] , "/\\u0062" :\n[\t"${b}"\r] }`),
      withDigests(`{"/a":["\\u0061${a.slice(1)}"]}`),
      withDigests(`{"/a":["${b}"],"/a":["${a}"]}`),
      withDigests(`{"__proto__":["${a}"]}`),
      withDigests('{}'),
      JSON.stringify(emptyPolicy({ release: 1e0 })),
      JSON.stringify(emptyPolicy({ extra: [1.5e-3, -0, true, false, null, { x: '\u00e9\ud83d\ude00' }] })),
      `\ufeff${withDigests(`{"/a":["${a}"]}`)}`,
    ];
    for (const text of texts) {
      const fromBytes = parseRuntimePolicy(Buffer.from(text));
      const parsed = loadRuntimePolicy(JSON.parse(text.replace(/^\ufeff/, '')));
      for (const name of ['/a', '/b', '__proto__']) {
        assert.deepEqual(fromBytes.digests.hexDigests(name), parsed.digests.hexDigests(name), `${name} in ${text.slice(0, 80)}`);
        assert.equal(fromBytes.digests.has(name, digestOf(a)), parsed.digests.has(name, digestOf(a)), text);
      }
      assert.equal(fromBytes.digests.size, parsed.digests.size, text);
    }
    assert.equal(parseRuntimePolicy(Buffer.from(texts[3] as string)).digests.has('/a', digestOf(b)), false);
    const broken = [
      withDigests(`{"/a":["${a}",]}`),
      withDigests(`{"/a":["${a}"],}`),
      withDigests(`{'/a':["${a}"]}`),
      withDigests(`{"/a":["${a}"]`),
      JSON.stringify(emptyPolicy()).replace('"release":0', '"release":01'),
      JSON.stringify(emptyPolicy()).replace('"release":0', '"release":+1'),
      JSON.stringify(emptyPolicy()).replace('"release":0', '"release":.5'),
      JSON.stringify(emptyPolicy()).replace('"release":0', '"release":1.'),
      JSON.stringify(emptyPolicy()).replace('"excludes":[]', '"excludes":["\\x"]'),
      JSON.stringify(emptyPolicy()).replace('"excludes":[]', '"excludes":["\\u12G4"]'),
      JSON.stringify(emptyPolicy()).replace('"excludes":[]', '"excludes":["a\tb"]'),
      JSON.stringify(emptyPolicy()).replace('"excludes":[]', '"excludes":[tru]'),
      `${JSON.stringify(emptyPolicy())} x`,
      '',
      `${'['.repeat(600)}${']'.repeat(600)}`,
    ];
    for (const text of broken) {
      if (!text.startsWith('[[')) assert.throws(() => JSON.parse(text), SyntaxError, text);
      assert.throws(() => parseRuntimePolicy(Buffer.from(text)), { code: 'POLICY_BAD_JSON' }, text.slice(0, 80));
    }
  });

  it('a digest list that breaks the schema is the same error as for a parsed document, after the earlier fields are checked', () => {
    const cases: Array<[string, string, string]> = [
      [`{"/a":["${a.toUpperCase()}"]}`, 'POLICY_SCHEMA', 'digests["/a"][0]'],
      [`{"/a":["${a}","abc"]}`, 'POLICY_SCHEMA', 'digests["/a"][1]'],
      ['{"/a":[]}', 'POLICY_SCHEMA', 'digests["/a"]'],
      [`{"/a":"${a}"}`, 'POLICY_SCHEMA', 'digests["/a"]'],
      [`{"/a":[${a.length}]}`, 'POLICY_SCHEMA', 'digests["/a"][0]'],
      [`{"/a":[${Array(MAX_DIGESTS_PER_ENTRY + 1).fill(`"${a}"`).join(',')}]}`, 'POLICY_TOO_LARGE', 'digests["/a"]'],
      [`{"/${'x'.repeat(4096)}":["${a}"]}`, 'POLICY_TOO_LARGE', `digests[${JSON.stringify(`/${'x'.repeat(199)}`)}] name length`],
    ];
    for (const [json, code, field] of cases) {
      const text = withDigests(json);
      for (const load of [() => parseRuntimePolicy(Buffer.from(text)), () => loadRuntimePolicy(JSON.parse(text))]) {
        assert.throws(load, (e: PolicyError) => e.code === code && e.details.field === field, `${json.slice(0, 60)}: ${code} ${field}`);
      }
    }
    // meta is checked before digests, from bytes as from a parsed document.
    const both = withDigests('{"/a":[]}').replace('"version":1', '"version":2');
    assert.throws(() => parseRuntimePolicy(Buffer.from(both)), { code: 'POLICY_VERSION' });
  });

  it('the index finds every listed digest of a large policy and no other', () => {
    const names = 2000;
    const lists: Record<string, string[]> = {};
    for (let i = 0; i < names; i++) lists[`/bin/f${i}`] = [0, 1, 2].map((j) => (i * 3 + j).toString(16).padStart(64, '0'));
    const p = parseRuntimePolicy(Buffer.from(JSON.stringify(emptyPolicy({ digests: lists }))));
    assert.equal(p.digests.size, names);
    for (let i = 0; i < names; i++) {
      for (let j = 0; j < 3; j++) assert.equal(p.digests.has(`/bin/f${i}`, digestOf((i * 3 + j).toString(16).padStart(64, '0'))), true);
      assert.equal(p.digests.has(`/bin/f${i}`, digestOf((i * 3 + 3).toString(16).padStart(64, '0'))), false);
      assert.equal(p.digests.has(`/bin/f${i}`, digestOf((i * 3).toString(16).padStart(40, '0'))), false);
    }
    assert.equal(p.digests.hasName('/bin/f2000'), false);
  });
});
