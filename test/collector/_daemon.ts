/**
 * The CLI as child processes for the collector tests: `imakeep run` as a daemon that can be
 * SIGKILLed, and one-shot verbs (`log`, `status`) with their output. Always async: the test
 * process hosts the TPM multiplexer, so it must keep serving while a child runs.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Rig } from './_rig.js';

/** The built CLI. */
export const CLI = join(fileURLToPath(new URL('../../', import.meta.url)), 'src', 'cli.js');

/** A finished CLI run. */
export interface CliResult {
  readonly code: number | null;
  readonly signal: string | null;
  readonly stdout: Buffer;
  readonly stderr: string;
}

function collect(child: ChildProcess, out: Buffer[] = []): Promise<CliResult> {
  let err = '';
  child.stdout?.on('data', (d: Buffer) => out.push(d));
  child.stderr?.on('data', (d: Buffer) => {
    err = (err + d.toString('utf8')).slice(-8192);
  });
  return new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(out), stderr: err }));
  });
}

/** Runs `imakeep ARGS` to its end. */
export function runCli(args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return collect(spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } }));
}

/** A running `imakeep run`. */
export interface Daemon {
  readonly pid: number;
  readonly exited: Promise<CliResult>;
  /** What it printed on stdout so far. */
  output(): string;
  /** Sends `signal` by pid (nothing if it already exited). */
  kill(signal: NodeJS.Signals): void;
}

/** The arguments of `imakeep run` on a rig. */
export function runArgs(rig: Rig, extra: readonly string[] = []): string[] {
  return [
    'run',
    '--securityfs',
    rig.emu.securityfsRoot,
    '--tpm',
    rig.tpmAddress,
    '--store',
    rig.storeDir,
    '--boot-id-file',
    rig.bootIdPath,
    '--cmdline-file',
    rig.cmdlinePath,
    '--banks',
    'sha1,sha256',
    ...extra,
  ];
}

/** Starts `imakeep run` on the rig (the rig's own store must be closed: LevelDB admits one process). */
export function startDaemon(rig: Rig, extra: readonly string[] = [], env: NodeJS.ProcessEnv = {}): Daemon {
  const child = spawn(process.execPath, [CLI, ...runArgs(rig, extra)], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const out: Buffer[] = [];
  const exited = collect(child, out);
  let done = false;
  void exited.then(() => {
    done = true;
  });
  return {
    pid: child.pid ?? -1,
    exited,
    output: () => Buffer.concat(out).toString('utf8'),
    kill(signal) {
      if (done || child.pid === undefined) return;
      try {
        process.kill(child.pid, signal);
      } catch {
        // exited meanwhile
      }
    },
  };
}

/** Polls `check` every 50 ms until it is true or `timeoutMs` passed; returns the last result. */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}
