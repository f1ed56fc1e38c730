/**
 * The import rule: arrows point down only (README "Layers", docs/design.md#layers). This test
 * reads every import of the repository's TypeScript and scripts — static `import` and
 * `import type`, `export … from`, dynamic `import('…')` and type-position `import('…')` — and
 * fails with every arrow that points up or sideways, one `file:line` each.
 *
 * What counts:
 * - Inside `src/`, a file belongs to the layer of its first folder (`src/cli.ts` to `cli`,
 *   `src/errors.ts` to `errors`). A layer may import itself and the layers `LAYERS` gives it, and
 *   what those may import (the arrows are transitive: `daemon → collector` lets the daemon use
 *   `store` too). `src/` never imports outside `src/`: the shipped package carries no harness.
 * - Outside `src/` there are trees: `examples/`, `bench/`, `test/`, `hw/` (the dev-only hardware
 *   harness: swtpm, the securityfs emulator, QEMU) and `scripts/`. Into `src/` they import only
 *   what a user of the package can: a public module index (`src/<module>/index.ts`, a subpath of
 *   package.json `exports`), `src/errors.ts` (`imakeep/errors`) or the dev-only `src/testing`
 *   index (`imakeep/testing`). A tree imports its own files freely; across trees only
 *   `TREE_ARROWS`: tests, benches and the demo run on the `hw/` harness; tests prove what the
 *   examples and the benches do. A file whose name starts with `_` is private to its tree
 *   (`bench/_plot.ts`, `test/collector/_rig.ts`): only the tree's own tests, in `test/<tree>/`,
 *   import it from outside (test/bench/plot.test.ts). So no examples → bench, no bench → test,
 *   no test rig → a bench's private helper.
 * - A dynamic import whose specifier is computed cannot be checked and is itself a violation,
 *   except in `scripts/`, whose `surface.mjs` loads each subpath of package.json `exports` by
 *   path: the public surface by definition.
 * - Imports of packages (`node:*`, npm) are not arrows between our parts and are not checked.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/** The repository root (this file runs from `dist/test/house/`). */
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** Each layer of `src/` and the layers below it it imports directly; `base` and `errors` are below all. */
const LAYERS: Readonly<Record<string, readonly string[]>> = {
  errors: [],
  base: ['errors'],
  ima: ['base', 'errors'],
  tpm: ['base', 'errors'],
  kernel: ['ima'],
  store: ['ima'],
  collector: ['ima', 'tpm', 'kernel', 'store'],
  serve: ['ima', 'tpm', 'store'],
  verify: ['ima', 'tpm', 'store'],
  policy: ['ima'],
  enroll: ['tpm'],
  daemon: ['collector', 'serve', 'verify', 'enroll'],
  fleet: ['verify', 'policy', 'enroll', 'serve', 'store', 'tpm', 'ima'],
  // The command line may use every layer (and the crash seam of `imakeep/testing`); the dev-only
  // `testing` subpath is above everything, so nothing else in src may import it.
  cli: ['errors', 'base', 'ima', 'tpm', 'kernel', 'store', 'collector', 'serve', 'verify', 'policy', 'enroll', 'daemon', 'fleet', 'testing'],
  testing: ['errors', 'base', 'ima', 'tpm', 'kernel', 'store', 'collector', 'serve', 'verify', 'policy', 'enroll', 'daemon', 'fleet'],
};

/** The trees outside `src/` and the other trees each may import (besides `src/`'s public indexes). */
const TREE_ARROWS: Readonly<Record<string, readonly string[]>> = {
  examples: ['hw'],
  bench: ['hw'],
  test: ['hw', 'examples', 'bench'],
  hw: [],
  scripts: [],
};

/** The files of `src/` a file outside it may import: what package.json `exports` names. */
function isPublicEntry(srcPath: string): boolean {
  return srcPath === 'src/errors.ts' || /^src\/[a-z-]+\/index\.ts$/.test(srcPath);
}

/** Every layer `layer` may import: itself, its arrows, and theirs. */
function reachable(layer: string, seen = new Set<string>()): Set<string> {
  if (seen.has(layer)) return seen;
  seen.add(layer);
  for (const below of LAYERS[layer] ?? []) reachable(below, seen);
  return seen;
}

/** The layer (`src/<layer>/…`, `src/<layer>.ts`) or tree (`test/…`) of a repository path. */
function partOf(path: string): string {
  const parts = path.split('/');
  if (parts[0] !== 'src') return parts[0] ?? '';
  return (parts.length === 2 ? parts[1]?.replace(/\.ts$/, '') : parts[1]) ?? '';
}

/** One import found in a file: where, and the specifier as written. */
interface Arrow {
  readonly file: string;
  readonly line: number;
  readonly specifier: string | undefined;
}

/** The imports of one source file; `specifier` undefined for a computed dynamic import. */
function arrowsOf(file: string): Arrow[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const kind = file.endsWith('.ts') ? ts.ScriptKind.TS : ts.ScriptKind.JS;
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, kind);
  const arrows: Arrow[] = [];
  const add = (node: ts.Node, spec: ts.Node | undefined) => {
    const line = source.getLineAndCharacterOfPosition(node.getStart(source)).line + 1;
    const literal = spec !== undefined && (ts.isStringLiteral(spec) || ts.isNoSubstitutionTemplateLiteral(spec));
    arrows.push({ file, line, specifier: literal ? spec.text : undefined });
  };
  const visit = (node: ts.Node) => {
    if (ts.isImportDeclaration(node) || (ts.isExportDeclaration(node) && node.moduleSpecifier !== undefined)) add(node, node.moduleSpecifier);
    else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) add(node, node.arguments[0]);
    else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) add(node, node.argument.literal);
    ts.forEachChild(node, visit);
  };
  visit(source);
  return arrows;
}

/** The repository's source files, as `/`-separated paths from the root. */
function sourceFiles(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(join(ROOT, dir))) {
      const path = `${dir}/${name}`;
      if (statSync(join(ROOT, path)).isDirectory()) walk(path);
      else if (/\.(ts|mts|mjs)$/.test(name) && !name.endsWith('.d.ts')) out.push(path);
    }
  };
  for (const tree of ['src', ...Object.keys(TREE_ARROWS)]) walk(tree);
  return out.sort();
}

/** Why `arrow` breaks the rule, or undefined when it keeps it. */
function violation(arrow: Arrow): string | undefined {
  const from = partOf(arrow.file);
  if (arrow.specifier === undefined) return from === 'scripts' ? undefined : 'a computed dynamic import: the rule cannot check it';
  if (!arrow.specifier.startsWith('.')) return undefined;
  const target = relative(ROOT, join(ROOT, dirname(arrow.file), arrow.specifier)).split(sep).join('/').replace(/\.js$/, '.ts');
  const to = partOf(target);
  if (arrow.file.startsWith('src/')) {
    if (!target.startsWith('src/')) return `src may not import ${to}/ (${target})`;
    return reachable(from).has(to) ? undefined : `${from} may not import ${to} (${target})`;
  }
  if (target.startsWith('src/')) return isPublicEntry(target) ? undefined : `${from}/ imports a private file of src: ${target} (use its module index or imakeep/testing)`;
  if (to === from) return undefined;
  if (!TREE_ARROWS[from]?.includes(to)) return `${from}/ may not import ${to}/ (${target})`;
  const isPrivate = (target.split('/').at(-1) ?? '').startsWith('_');
  return isPrivate && !arrow.file.startsWith(`test/${to}/`) ? `${from}/ imports ${target}, private to ${to}/` : undefined;
}

test('the layers name only layers, and every folder of src/ is a layer', () => {
  for (const [layer, below] of Object.entries(LAYERS)) for (const b of below) assert.ok(b in LAYERS, `${layer} → unknown layer ${b}`);
  const folders = readdirSync(join(ROOT, 'src')).map((n) => n.replace(/\.ts$/, ''));
  assert.deepEqual(folders.filter((f) => !(f in LAYERS)), []);
});

test('the rule itself: up, sideways and private arrows are caught, down arrows pass', () => {
  const check = (file: string, specifier: string | undefined) => violation({ file, line: 1, specifier });
  assert.equal(check('src/kernel/reader.ts', '../ima/index.js'), undefined);
  assert.equal(check('src/daemon/daemon.ts', '../store/index.js'), undefined); // transitive
  assert.equal(check('src/ima/record.ts', '../errors.js'), undefined);
  assert.match(check('src/ima/record.ts', '../kernel/index.js') ?? '', /ima may not import kernel/);
  assert.match(check('src/verify/log.ts', '../serve/bundle.js') ?? '', /verify may not import serve/);
  assert.match(check('src/cli/sim.ts', '../../hw/securityfs/index.js') ?? '', /src may not import hw/);
  assert.match(check('src/daemon/daemon.ts', '../testing/index.js') ?? '', /daemon may not import testing/);
  assert.equal(check('test/store/x.test.ts', '../../src/store/index.js'), undefined);
  assert.match(check('test/store/x.test.ts', '../../src/store/keys.js') ?? '', /private file of src/);
  assert.match(check('examples/demo.ts', '../bench/_plot.js') ?? '', /examples\/ may not import bench\//);
  assert.match(check('bench/ingest.ts', '../test/collector/_soft-tpm.js') ?? '', /bench\/ may not import test\//);
  assert.equal(check('test/fleet/a.test.ts', '../serve/_keylime.js'), undefined);
  assert.equal(check('test/hw/a.test.ts', '../../hw/swtpm.js'), undefined);
  assert.equal(check('test/bench/plot.test.ts', '../../bench/_plot.js'), undefined);
  assert.match(check('test/collector/_rig.ts', '../../bench/_tpm-mux.js') ?? '', /private to bench\//);
  assert.equal(check('test/slow/memory-bound.test.ts', '../../bench/ingest.js'), undefined);
  assert.match(check('bench/x.ts', '../examples/demo.js') ?? '', /bench\/ may not import examples\//);
  assert.match(check('hw/qemu/run.ts', '../../test/kernel/helpers.js') ?? '', /hw\/ may not import test\//);
  assert.match(check('test/a.test.ts', undefined) ?? '', /computed dynamic import/);
  assert.equal(check('scripts/surface.mjs', undefined), undefined);
});

test('every import of src, examples, bench, test, hw and scripts points down', () => {
  const files = sourceFiles();
  assert.ok(files.length > 200, `only ${files.length} source files found under ${ROOT}`);
  const arrows = files.flatMap(arrowsOf);
  assert.ok(arrows.length > 1000, `only ${arrows.length} imports found`);
  const broken = arrows.flatMap((a) => {
    const why = violation(a);
    return why === undefined ? [] : [`${a.file}:${a.line}: ${why}`];
  });
  assert.equal(broken.length, 0, `${broken.length} arrows break the import rule:\n${broken.join('\n')}`);
});
