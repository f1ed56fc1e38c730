/**
 * Citations stay true: every `docs/<file>.md#anchor` cited in a comment of the code (src,
 * examples, bench, test, hw, scripts) or in the repository's Markdown resolves to a heading of
 * that file, by GitHub's anchor rules; and nothing cites a file outside the repository (the
 * shared folder beside it on a development machine, its `reference` fact sheets), which a reader
 * of the repository does not have.
 *
 * GitHub's anchor of a heading (the rules of github-slugger, which github.com follows): the
 * heading's rendered text, lowercased; every character that is not a letter, digit, mark,
 * space, `-` or `_` dropped; each space turned into `-`; the second heading with the same anchor
 * gets `-1`, the third `-2`.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/** The repository root (this file runs from `dist/test/house/`). */
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const CODE_TREES = ['src', 'examples', 'bench', 'test', 'hw', 'scripts'];

/** GitHub's anchor of a heading's Markdown text, before de-duplication. */
export function slugOf(heading: string): string {
  const rendered = heading
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1') // links and images: their text
    .replace(/<[^>]+>/g, ''); // inline HTML tags
  return rendered.trim().toLowerCase().replace(/[^\p{L}\p{N}\p{M}\p{Pc} -]/gu, '').replace(/ /g, '-');
}

/** Every anchor the headings of a Markdown text have (fenced code blocks hold no headings). */
export function anchorsOf(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  let fence: string | undefined;
  for (const line of markdown.split('\n')) {
    const f = /^\s{0,3}(`{3,}|~{3,})/.exec(line)?.[1];
    if (f !== undefined && (fence === undefined || f.startsWith(fence))) {
      fence = fence === undefined ? f : undefined;
      continue;
    }
    const heading = fence === undefined ? /^\s{0,3}#{1,6}\s+(.*?)(\s+#+\s*)?$/.exec(line)?.[1] : undefined;
    if (heading === undefined) continue;
    const slug = slugOf(heading);
    const n = seen.get(slug) ?? 0;
    seen.set(slug, n + 1);
    anchors.add(n === 0 ? slug : `${slug}-${n}`);
  }
  return anchors;
}

/** Files under `dir` (repository-relative) whose name matches `pattern`. */
function filesUnder(dir: string, pattern: RegExp): string[] {
  if (!existsSync(join(ROOT, dir))) return [];
  return readdirSync(join(ROOT, dir)).flatMap((name) => {
    const path = `${dir}/${name}`;
    if (name === 'node_modules' || name === 'dist') return [];
    if (statSync(join(ROOT, path)).isDirectory()) return filesUnder(path, pattern);
    return pattern.test(name) ? [path] : [];
  });
}

/** The comments of a TypeScript or JavaScript file, each with the line it starts on. */
function commentsOf(file: string): Array<{ line: number; text: string }> {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, file.endsWith('.ts') ? ts.ScriptKind.TS : ts.ScriptKind.JS);
  const found = new Map<number, string>();
  const take = (ranges: ts.CommentRange[] | undefined) => {
    for (const r of ranges ?? []) found.set(r.pos, text.slice(r.pos, r.end));
  };
  const visit = (node: ts.Node) => {
    take(ts.getLeadingCommentRanges(text, node.pos));
    take(ts.getTrailingCommentRanges(text, node.end));
    ts.forEachChild(node, visit);
  };
  visit(source);
  take(ts.getLeadingCommentRanges(text, source.endOfFileToken.pos));
  return [...found].map(([pos, body]) => ({ line: source.getLineAndCharacterOfPosition(pos).line + 1, text: body }));
}

/** Every text that may cite: code comments, and the Markdown files of the repository. */
function citingTexts(): Array<{ where: string; text: string }> {
  const code = CODE_TREES.flatMap((d) => filesUnder(d, /\.(ts|mjs)$/)).filter((f) => !f.endsWith('.d.ts'));
  const markdown = ['README.md', ...['docs', ...CODE_TREES].flatMap((d) => filesUnder(d, /\.md$/))];
  return [
    ...code.flatMap((file) => commentsOf(file).map((c) => ({ where: `${file}:${c.line}`, text: c.text }))),
    ...markdown.flatMap((file) => readFileSync(join(ROOT, file), 'utf8').split('\n').map((text, i) => ({ where: `${file}:${i + 1}`, text }))),
  ];
}

const citing = citingTexts();

test('GitHub anchors: punctuation dropped, spaces to hyphens, duplicates numbered, fences skipped', () => {
  assert.equal(slugOf('The development TPM proxy'), 'the-development-tpm-proxy');
  assert.equal(slugOf('`ima_flush_htable` and the N / D flavours'), 'ima_flush_htable-and-the-n--d-flavours');
  assert.equal(slugOf('Kernel memory per record (x86-64)'), 'kernel-memory-per-record-x86-64');
  assert.equal(slugOf('See [the spec](https://example.org) §3.1'), 'see-the-spec-31');
  assert.deepEqual([...anchorsOf('# A\n## A\n```\n# not a heading\n```\n### A b ###\n')], ['a', 'a-1', 'a-b']);
});

test('every docs/<file>.md#anchor cited resolves to a heading of that file', () => {
  const anchors = new Map<string, Set<string>>();
  const broken: string[] = [];
  let cited = 0;
  for (const { where, text } of citing) {
    for (const m of text.matchAll(/\bdocs\/([\w.-]+\.md)#([\w-]+)/g)) {
      const [, file = '', anchor = ''] = m;
      cited++;
      const path = join(ROOT, 'docs', file);
      if (!existsSync(path)) {
        broken.push(`${where}: docs/${file} does not exist`);
        continue;
      }
      const known = anchors.get(file) ?? anchorsOf(readFileSync(path, 'utf8'));
      anchors.set(file, known);
      if (!known.has(anchor)) broken.push(`${where}: docs/${file}#${anchor}: no such heading`);
    }
  }
  assert.ok(cited > 20, `only ${cited} citations of docs/ found`);
  assert.equal(broken.length, 0, `${broken.length} citations do not resolve:\n${broken.join('\n')}`);
});

test('nothing cites a file outside the repository (the shared folder, its reference fact sheets)', () => {
  const outside = citing
    .filter(({ text }) => /\.\.\/shared\b|\breference\/[\w.-]+\.md\b/.test(text))
    .map(({ where, text }) => `${where}: ${text.trim().slice(0, 120)}`);
  assert.equal(outside.length, 0, `${outside.length} citations of files outside the repository:\n${outside.join('\n')}`);
});
