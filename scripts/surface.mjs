#!/usr/bin/env node
/**
 * The size of imakeep's public surface and of what the daemon loads, measured on the compiled
 * output (run `npm run -s build` first):
 * - runtime exports of each public subpath of package.json (`imakeep/testing` counted apart: it is
 *   dev-only);
 * - the modules `imakeep run` loads at start: `dist/src/cli.js` (whose only static import is
 *   errors.js; importing it here would run the CLI) and the verb's module with everything it
 *   imports, recorded by a module-loading hook; and the sum of their non-blank lines.
 *
 *   node scripts/surface.mjs [--json]
 */
import { readFileSync } from 'node:fs';
import { register } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { MessageChannel } from 'node:worker_threads';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

// Load hook first: it must see every module the daemon entry imports.
const { port1, port2 } = new MessageChannel();
const loaded = new Set();
port1.on('message', (url) => loaded.add(url));
port1.unref();
const hook = `export async function initialize({ port }) { globalThis.port = port; }
export async function load(url, context, next) { globalThis.port.postMessage(url); return next(url, context); }`;
register(`data:text/javascript,${encodeURIComponent(hook)}`, { data: { port: port2 }, transferList: [port2] });

await import(pathToFileURL(join(root, 'dist/src/cli/run.js')).href);
loaded.add(pathToFileURL(join(root, 'dist/src/cli.js')).href);
await new Promise((resolve) => setTimeout(resolve, 100)); // the hook's last messages
const daemonFiles = [...loaded].filter((u) => u.startsWith('file:')).map((u) => fileURLToPath(u)).filter((f) => f.startsWith(join(root, 'dist/src/')));
const lines = (f) => readFileSync(f, 'utf8').split('\n').filter((l) => l.trim() !== '' && !l.startsWith('//# sourceMappingURL')).length;
const daemonLines = daemonFiles.reduce((n, f) => n + lines(f), 0);

const subpaths = {};
for (const [name, target] of Object.entries(pkg.exports)) {
  if (!String(target).endsWith('.js')) continue;
  subpaths[name] = Object.keys(await import(pathToFileURL(join(root, target)).href)).length;
}
const publicExports = Object.entries(subpaths).filter(([name]) => name !== './testing').reduce((n, [, c]) => n + c, 0);
const result = { subpaths, publicExports, testingExports: subpaths['./testing'] ?? 0, daemon: { modules: daemonFiles.length, lines: daemonLines, files: daemonFiles.map((f) => relative(root, f)).sort() } };
if (process.argv.includes('--json')) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
else {
  for (const [name, count] of Object.entries(subpaths)) process.stdout.write(`${name.padEnd(14)} ${count}\n`);
  process.stdout.write(`public runtime exports: ${publicExports} (+ ${result.testingExports} in ./testing)\n`);
  process.stdout.write(`imakeep run loads at start: ${daemonFiles.length} modules of dist/src, ${daemonLines} non-blank lines\n`);
}
process.exit(0);
