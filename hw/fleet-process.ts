/**
 * A fleet in a child process (`imakeep fleet`, the CLI a deployment runs) for tests and benches:
 * a test can SIGKILL it mid-push and start another on the same data, a bench reads its CPU and
 * memory from /proc. PGlite under `data`, or the PostgreSQL server `database` names.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** The compiled CLI (this file runs from dist/hw). */
const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));

/** A running fleet process. */
export interface FleetProcess {
  readonly url: string;
  readonly child: ChildProcess;
  /** SIGKILL by pid; resolves once the process is gone. */
  kill(): Promise<void>;
}

/** Starts `imakeep fleet --data DATA --listen 127.0.0.1:0 [--database URL]` and waits for its address line. */
export async function spawnFleet(data: string, database?: string): Promise<FleetProcess> {
  const args = [CLI, 'fleet', '--data', data, '--listen', '127.0.0.1:0', ...(database === undefined ? [] : ['--database', database])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = once(child, 'exit');
  const lines = createInterface({ input: child.stdout ?? process.stdin });
  const url = await new Promise<string>((resolve, reject) => {
    lines.on('line', (line) => {
      const m = /^imakeep fleet: (http:\/\/\S+)$/.exec(line);
      if (m?.[1] !== undefined) resolve(m[1]);
    });
    void exited.then(([code]) => reject(new Error(`imakeep fleet exited (${String(code)}) before listening: ${stderr}`)));
  });
  return {
    url,
    child,
    async kill() {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
      await exited;
    },
  };
}

/** Polls `probe` every 5 ms until it returns true (the caller's test timeout bounds the wait). */
export async function until(probe: () => Promise<boolean>): Promise<void> {
  while (!(await probe())) await new Promise((r) => setTimeout(r, 5));
}
