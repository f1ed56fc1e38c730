/**
 * The ingest bench's emulated kernel, in a process of its own: it mounts the FUSE securityfs
 * emulator, generates the workload's records, appends them (the emulator's frames: every bank's
 * binary and ASCII view of each record) and extends its own software PCRs after logging them (log
 * before extend, like the kernel), then reports those PCR values. On a device the kernel is not in
 * the daemon's process: fed from the bench's own process, the generator's records, the frames and
 * the PCR extends put their garbage into the collector's young generation, their malloc into its
 * RssAnon and their scavenges into its cycle (bench/results/lean.md, "the bench's feeding").
 *
 * Spoken to over the fork IPC channel (structured clone: Uint8Arrays pass as they are), one
 * request at a time: `feed` returns once the records are logged and extended, so nothing of the
 * feeder runs while the collector's cycle is measured.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startSecurityfsEmulator, type EmulatorStats } from '../hw/securityfs/index.js';
import { PcrReplay, encodedRecordLength, type PcrReplayState } from '../src/ima/index.js';
import { ImaWorkload } from '../src/testing/index.js';

/** What the feeder's kernel looks like. */
export interface FeederOptions {
  readonly flavor: 'n' | 'staged';
}

/** Requests to the feeder. */
type FeederRequest =
  | { readonly kind: 'feed'; readonly records: number }
  | { readonly kind: 'stats' }
  | { readonly kind: 'stop' };

/** Answers of the feeder, one per request (and `ready` once mounted). */
type FeederReply =
  | { readonly kind: 'ready'; readonly securityfsRoot: string }
  | { readonly kind: 'fed'; readonly records: number; readonly rawBytes: number; readonly pcrs: PcrReplayState }
  | { readonly kind: 'stats'; readonly stats: EmulatorStats }
  | { readonly kind: 'stopped' }
  | { readonly kind: 'failed'; readonly message: string };

/** What one {@link Feeder.feed} logged. */
export interface Fed {
  readonly records: number;
  /** Size of those records in the SHA-1 binary list. */
  readonly rawBytes: number;
  /** The software PCRs after extending them (PcrReplay state: banks sha1, sha256). */
  readonly pcrs: PcrReplayState;
}

/** The feeder process, seen from the bench. */
export interface Feeder {
  /** Pass as the collector's `securityfsRoot`. */
  readonly securityfsRoot: string;
  /** Logs and extends `records` more records; resolves once both are done. */
  feed(records: number): Promise<Fed>;
  stats(): Promise<EmulatorStats>;
  /** Unmounts the emulator and waits for the feeder to exit. Safe to call twice. */
  stop(): Promise<void>;
}

/** Records generated and appended at a time: bounds the feeder's own memory. */
const FEED_SLICE_RECORDS = 512;

/** One request/reply exchange at a time over `child`'s IPC channel. */
function exchange(child: ChildProcess): (request: FeederRequest | undefined) => Promise<FeederReply> {
  return (request) =>
    new Promise((resolve, reject) => {
      const onExit = (code: number | null): void => reject(new Error(`ingest feeder exited with ${code}`));
      child.once('exit', onExit);
      child.once('message', (reply: FeederReply) => {
        child.off('exit', onExit);
        if (reply.kind === 'failed') reject(new Error(`ingest feeder: ${reply.message}`));
        else resolve(reply);
      });
      if (request !== undefined) child.send(request);
    });
}

/** Forks the feeder and waits until its emulator is mounted. */
export async function startFeeder(opts: FeederOptions): Promise<Feeder> {
  const child = fork(fileURLToPath(import.meta.url), ['--flavor', opts.flavor], { serialization: 'advanced', stdio: ['ignore', 'ignore', 'inherit', 'ipc'], execArgv: [] });
  const ask = exchange(child);
  const ready = await ask(undefined);
  if (ready.kind !== 'ready') throw new Error(`ingest feeder answered ${ready.kind} to start`);
  let stopped = false;
  return {
    securityfsRoot: ready.securityfsRoot,
    async feed(records) {
      const reply = await ask({ kind: 'feed', records });
      if (reply.kind !== 'fed') throw new Error(`ingest feeder answered ${reply.kind} to feed`);
      return reply;
    },
    async stats() {
      const reply = await ask({ kind: 'stats' });
      if (reply.kind !== 'stats') throw new Error(`ingest feeder answered ${reply.kind} to stats`);
      return reply.stats;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.send({ kind: 'stop' } satisfies FeederRequest);
      await exited;
    },
  };
}

/** The feeder's side: serves requests until `stop` or until the bench goes away. */
async function serve(flavor: 'n' | 'staged'): Promise<void> {
  const emu = await startSecurityfsEmulator({ banks: ['sha1', 'sha256'], flushHtable: flavor === 'staged', seqBufBytes: 0 });
  const workload = new ImaWorkload({ seed: 2026, template: 'mixed', violationRate: 0.005 });
  const pcrs = new PcrReplay({ banks: { sha1: 'native', sha256: 'native' }, verifyDigests: false });
  const reply = (r: FeederReply): void => {
    process.send?.(r);
  };
  let queue = Promise.resolve();
  const handle = async (request: FeederRequest): Promise<void> => {
    try {
      if (request.kind === 'feed') {
        let rawBytes = 0;
        for (let fed = 0; fed < request.records; ) {
          const records = [...workload.records(Math.min(FEED_SLICE_RECORDS, request.records - fed))];
          for (const record of records) rawBytes += encodedRecordLength(record);
          await emu.append(records);
          for (const record of records) pcrs.extend(record);
          fed += records.length;
        }
        reply({ kind: 'fed', records: request.records, rawBytes, pcrs: pcrs.toState() });
      } else if (request.kind === 'stats') {
        reply({ kind: 'stats', stats: emu.stats() });
      } else {
        await emu.stop();
        reply({ kind: 'stopped' });
        process.disconnect?.();
      }
    } catch (err) {
      reply({ kind: 'failed', message: err instanceof Error ? err.message : String(err) });
    }
  };
  process.on('message', (request: FeederRequest) => {
    queue = queue.then(() => handle(request));
  });
  // The bench died or let go: unmount, whatever was pending.
  process.on('disconnect', () => {
    void queue.then(() => emu.stop());
  });
  reply({ kind: 'ready', securityfsRoot: emu.securityfsRoot });
}

if (process.argv[1] !== undefined && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const flavor = process.argv[process.argv.indexOf('--flavor') + 1] === 'staged' ? 'staged' : 'n';
  await serve(flavor);
}
