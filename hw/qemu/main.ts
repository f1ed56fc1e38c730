#!/usr/bin/env node
/**
 * Command line of the QEMU real-kernel harness:
 *   node dist/hw/qemu/main.js [--kernel PKG|VMLINUZ] [--round DIR]... [--files N] [--cmdline TEXT] [--keep DIR]
 * Prints the run report as JSON on stdout and stage lines on stderr.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runImaGuest } from './run.js';

const { values } = parseArgs({
  options: {
    kernel: { type: 'string' },
    round: { type: 'string', multiple: true },
    files: { type: 'string', default: '5000' },
    cmdline: { type: 'string' },
    keep: { type: 'string' },
  },
});
const projectRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const workDir = resolve(values.keep ?? mkdtempSync(join(tmpdir(), 'imakeep-qemu-')));
try {
  const report = await runImaGuest({
    projectRoot,
    workDir,
    ...(values.kernel === undefined ? {} : { kernel: values.kernel }),
    ...(values.round === undefined ? {} : { slabRoundDirs: values.round }),
    ...(values.cmdline === undefined ? {} : { cmdline: values.cmdline }),
    filesPerRound: Number(values.files),
    onStage: (s) => process.stderr.write(`stage ${s.name}: host ${s.hostSeconds.toFixed(1)} s, guest uptime ${s.guestUptimeSeconds} s\n`),
  });
  const { securityfsModes, ...guest } = report.guest;
  process.stdout.write(`${JSON.stringify({ ...report, guest: { ...guest, securityfsModes: Object.fromEntries(securityfsModes) } }, null, 1)}\n`);
} finally {
  if (values.keep === undefined) rmSync(workDir, { recursive: true, force: true });
}
