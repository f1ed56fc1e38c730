/**
 * Worker-thread entry of `replayFile` (replay-file.ts): replays this worker's share of the
 * banks over the chunks the main thread puts in the shared ring, releasing each slot once parsed
 * and hashed. It runs on load because it is a thread's entry point; index.ts does not export it.
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { PcrReplay } from './replay.js';
import { replayList } from './stream.js';
import { serializeError, type FromReplayWorker, type ReplayWorkerData, type ToReplayWorker } from './replay-file.js';

/** Runs the share and posts `done`, `failed` or, after a `stop`, `stopped`. */
async function run(port: MessagePort, data: ReplayWorkerData): Promise<void> {
  const post = (m: FromReplayWorker): void => port.postMessage(m);
  const inbox: ToReplayWorker[] = [];
  let wake: (() => void) | undefined;
  port.on('message', (m: ToReplayWorker) => {
    inbox.push(m);
    wake?.();
    wake = undefined;
  });
  let stopped = false;
  async function* chunks(): AsyncGenerator<Uint8Array> {
    for (;;) {
      while (inbox.length === 0) await new Promise<void>((resolve) => (wake = resolve));
      const m = inbox.shift();
      if (m === undefined || m.type === 'end') return;
      if (m.type === 'stop') {
        stopped = true;
        return;
      }
      yield new Uint8Array(data.ring, m.slot * data.slotBytes, m.length);
      // Resumed: the chunk is parsed and replayed, its slot may be refilled.
      post({ type: 'release', slot: m.slot });
    }
  }

  const mine = data.shares.map((share) => ({ index: share.replay, replay: new PcrReplay(share.options) }));
  try {
    await replayList(chunks(), mine.map((m) => m.replay), data.list);
    post(stopped ? { type: 'stopped' } : { type: 'done', states: mine.map((m) => ({ replay: m.index, state: m.replay.toState() })) });
  } catch (e) {
    // After a stop the list was cut short on purpose: an IMA_TRUNCATED then is not the list's.
    post(stopped ? { type: 'stopped' } : { type: 'failed', error: serializeError(e) });
  }
  port.close();
}

if (parentPort === null) throw new Error('replay-worker.js is the entry of a worker thread, not a module to import');
// workerData is what replayFile built for this worker (ReplayWorkerData), cloned by the runtime.
await run(parentPort, workerData as ReplayWorkerData);
