#!/usr/bin/env node
// Runs the compiled node:test files. Default: dist/test/**/*.test.js except the slow/ and qemu/
// folders. `--slow` adds test/slow (long fuzzing, soaks, crash loops); `--qemu` runs test/qemu
// (the real-kernel boot). In CI (CI=true) every suite runs once.
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const testRoot = join(root, 'dist', 'test');
const args = new Set(process.argv.slice(2));
const ci = process.env.CI === 'true';
const suites = new Set();
if (args.has('--qemu')) suites.add('qemu');
else suites.add('default');
if (args.has('--slow') || ci) suites.add('slow');
if (ci) suites.add('qemu');

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}

function suiteOf(file) {
  const first = relative(testRoot, file).split(sep)[0];
  return first === 'slow' || first === 'qemu' ? first : 'default';
}

const files = walk(testRoot).filter((f) => suites.has(suiteOf(f))).sort();
if (files.length === 0) {
  process.stderr.write('run-tests: no test files found\n');
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=2', ...files], { stdio: 'inherit', cwd: root });
process.exit(r.status ?? 1);
