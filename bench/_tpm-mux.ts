/**
 * Several TPM clients on one swtpm. swtpm serves one data connection at a time (src/tpm/transport.ts),
 * but the demo and the memory-pressure bench need two at once: the emulated kernel extending PCR 10
 * for every record, and the collector quoting it. This loopback proxy accepts any number of
 * clients and forwards their commands one at a time over a single upstream connection, each
 * command followed by its whole response, like a resource manager without the context swapping
 * (docs/tpm.md#swtpm; none is needed here: the emulator only extends, the collector owns its keys).
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

/** TPM 2.0 Part 1 §18: every command and response starts with tag (2) and total size (4, big-endian). */
const HEADER_BYTES = 10;
const SIZE_OFFSET = 2;

/**
 * The first whole command or response in `buffered`, and what follows it; undefined while
 * incomplete. A size below the header length cannot come from a TPM stack: it throws RangeError.
 */
export function takeTpmFrame(buffered: Uint8Array): { readonly frame: Uint8Array; readonly rest: Uint8Array } | undefined {
  if (buffered.length < HEADER_BYTES) return undefined;
  const size = new DataView(buffered.buffer, buffered.byteOffset, buffered.length).getUint32(SIZE_OFFSET, false);
  if (size < HEADER_BYTES) throw new RangeError(`TPM frame size ${size} is below the ${HEADER_BYTES}-byte header`);
  if (buffered.length < size) return undefined;
  return { frame: buffered.subarray(0, size), rest: buffered.subarray(size) };
}

/** Accumulates bytes from a stream and yields whole frames. */
class FrameReader {
  #buffered: Uint8Array = new Uint8Array(0);

  push(data: Uint8Array): Uint8Array[] {
    this.#buffered = this.#buffered.length === 0 ? data : Buffer.concat([this.#buffered, data]);
    const frames: Uint8Array[] = [];
    for (let next = takeTpmFrame(this.#buffered); next !== undefined; next = takeTpmFrame(this.#buffered)) {
      frames.push(next.frame);
      this.#buffered = next.rest;
    }
    return frames;
  }
}

/** A running proxy. */
export interface TpmMultiplexer {
  /** Address for `Tpm.open`: `swtpm:127.0.0.1:PORT`. */
  readonly address: string;
  /** Commands forwarded so far. */
  readonly commands: () => number;
  /** Closes the listener, the clients and the upstream connection. */
  close(): Promise<void>;
}

/** One connection to swtpm, one command in flight. */
class Upstream {
  readonly #host: string;
  readonly #port: number;
  #socket: Socket | undefined;
  #reader = new FrameReader();
  #pending: ((frame: Uint8Array | Error) => void) | undefined;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(host: string, port: number) {
    this.#host = host;
    this.#port = port;
  }

  /** Sends one command after every earlier one has been answered; resolves with its response. */
  send(command: Uint8Array): Promise<Uint8Array> {
    const run = this.#queue.then(() => this.#sendNow(command));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #sendNow(command: Uint8Array): Promise<Uint8Array> {
    const socket = await this.#connected();
    return new Promise((resolve, reject) => {
      this.#pending = (r) => (r instanceof Error ? reject(r) : resolve(r));
      socket.write(command);
    });
  }

  #connected(): Promise<Socket> {
    const open = this.#socket;
    if (open !== undefined && !open.destroyed) return Promise.resolve(open);
    return new Promise((resolve, reject) => {
      const socket = connect({ host: this.#host, port: this.#port, noDelay: true });
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        this.#socket = socket;
        this.#reader = new FrameReader();
        socket.on('data', (d: Buffer) => {
          for (const frame of this.#reader.push(d)) this.#settle(frame);
        });
        // A dead socket's late events must not fail a command sent on its successor.
        socket.on('error', (err) => this.#socket === socket && this.#settle(err));
        socket.on('close', () => this.#socket === socket && this.#settle(new Error('swtpm closed the connection')));
        resolve(socket);
      });
    });
  }

  #settle(result: Uint8Array | Error): void {
    const pending = this.#pending;
    this.#pending = undefined;
    pending?.(result);
  }

  close(): void {
    this.#socket?.destroy();
  }
}

/** Starts the proxy on a free loopback port in front of swtpm's data port. */
export async function startTpmMultiplexer(upstreamHost: string, upstreamPort: number): Promise<TpmMultiplexer> {
  const upstream = new Upstream(upstreamHost, upstreamPort);
  const clients = new Set<Socket>();
  let forwarded = 0;
  const server: Server = createServer((client) => {
    clients.add(client);
    client.setNoDelay(true);
    const reader = new FrameReader();
    // A client sends its next command only after the answer to the previous one (one outstanding
    // command per connection, as swtpm itself requires), so answers go back in order.
    let chain: Promise<unknown> = Promise.resolve();
    client.on('data', (d: Buffer) => {
      let frames: Uint8Array[];
      try {
        frames = reader.push(d);
      } catch {
        client.destroy();
        return;
      }
      for (const frame of frames) {
        chain = chain.then(async () => {
          const response = await upstream.send(frame);
          forwarded++;
          if (!client.destroyed) client.write(response);
        }).catch(() => client.destroy());
      }
    });
    client.on('error', () => client.destroy());
    client.on('close', () => clients.delete(client));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return {
    address: `swtpm:127.0.0.1:${port}`,
    commands: () => forwarded,
    async close() {
      for (const c of clients) c.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      upstream.close();
    },
  };
}
