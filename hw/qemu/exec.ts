import { spawn } from 'node:child_process';
import { QemuToolError } from './errors.js';

/** What a finished host program wrote. */
export interface ToolOutput {
  stdout: string;
  stderr: string;
}

/** Options of {@link runTool}. */
export interface RunToolOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Exit statuses that count as success (default: only 0). */
  okStatuses?: readonly number[];
  /** How stdout is decoded (default utf8; latin1 keeps binary output byte for byte). */
  encoding?: 'utf8' | 'latin1';
}

const STDERR_TAIL_CHARS = 2000;

/** How a finished host program ended. */
export interface ToolResult extends ToolOutput {
  status: number | null;
}

/** Runs a host program to completion and returns its exit status and output, whatever the status. */
export function runToolForStatus(file: string, args: readonly string[], options: RunToolOptions = {}): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => reject(new QemuToolError([file, ...args], null, e.message, { cause: e })));
    child.on('close', (status) =>
      resolve({ status, stdout: Buffer.concat(out).toString(options.encoding ?? 'utf8'), stderr: Buffer.concat(err).toString('utf8') }),
    );
  });
}

/**
 * Runs a host program to completion and returns its output; throws {@link QemuToolError} when it
 * cannot start or exits with a status not in `okStatuses`.
 */
export async function runTool(file: string, args: readonly string[], options: RunToolOptions = {}): Promise<ToolOutput> {
  const r = await runToolForStatus(file, args, options);
  if (r.status !== null && (options.okStatuses ?? [0]).includes(r.status)) return { stdout: r.stdout, stderr: r.stderr };
  throw new QemuToolError([file, ...args], r.status, r.stderr.slice(-STDERR_TAIL_CHARS));
}

/**
 * Runs `producer | consumer` without a shell (e.g. `dpkg-deb --fsys-tarfile X | tar -x`); throws
 * {@link QemuToolError} naming whichever side failed.
 */
export function pipeTools(
  producer: readonly [string, ...string[]],
  consumer: readonly [string, ...string[]],
  options: RunToolOptions = {},
): Promise<void> {
  const [pFile, ...pArgs] = producer;
  const [cFile, ...cArgs] = consumer;
  const finished = (child: ReturnType<typeof spawn>, command: readonly string[]): Promise<void> =>
    new Promise((resolve, reject) => {
      const err: Buffer[] = [];
      child.stderr?.on('data', (b: Buffer) => err.push(b));
      child.on('error', (e) => reject(new QemuToolError(command, null, e.message, { cause: e })));
      child.on('close', (status) => {
        if (status === 0) resolve();
        else reject(new QemuToolError(command, status, Buffer.concat(err).toString('utf8').slice(-STDERR_TAIL_CHARS)));
      });
    });
  const p = spawn(pFile, pArgs, { cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  const c = spawn(cFile, cArgs, { cwd: options.cwd, stdio: ['pipe', 'ignore', 'pipe'] });
  p.stdout.pipe(c.stdin);
  return Promise.all([finished(p, producer), finished(c, consumer)]).then(() => undefined);
}
