/**
 * Several TPM clients on one swtpm, as the kernel's resource manager (`/dev/tpmrm0`) lets every
 * client on a device share its TPM. swtpm serves one data connection at a time (docs/tpm.md#swtpm):
 * the securityfs emulator extending PCR 10, `imakeep run` quoting it and tpm2-tools reading it
 * would otherwise wait on each other's connection. A development harness: the sim (hw/sim.ts), the demo,
 * the benches and the tests that share a swtpm run one (docs/tpm.md#the-development-tpm-proxy).
 *
 * - Clients of the `--tpm` port (`swtpm:127.0.0.1:PORT`, imakeep's own client): any number; whole
 *   commands, framed by their commandSize, go over the proxy's one swtpm connection one at a time,
 *   each answered on the connection it came from. A connection is a client: the transient objects
 *   and sessions it created and did not flush are flushed when it closes, as tpmrm flushes a
 *   client's on close (drivers/char/tpm/tpm2-space.c, `tpm2_flush_space()`).
 * - tpm2-tools through tpm2-tss's swtpm TCTI (`swtpm:host=127.0.0.1,port=TCTI_PORT`): the TCTI opens
 *   a data connection per command and announces itself with CMD_SET_LOCALITY 0 on the control port
 *   TCTI_PORT + 1 (tpm2-tss src/tss2-tcti/tcti-swtpm.c, `Tss2_Tcti_Swtpm_Init`), so there a client
 *   is a TCTI instance (one tool run): what the previous one left loaded is flushed when the next
 *   one starts. The control port answers SET_LOCALITY 0 and GET_CAPABILITY itself and refuses what
 *   would reset, stop or reconfigure the TPM under the other clients.
 *
 * Handles are not virtualised: a client that flushes every transient handle (`tpm2_flushcontext
 * -t`) flushes the others' too.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { FlushContext } from '../src/tpm/index.js';
import { listenOnPortPair } from './swtpm.js';
import { encodeCommand } from '../src/testing/index.js';

/** TPM 2.0 Part 1 §18: every command and response starts with tag (2) and total size (4, big-endian). */
const HEADER_BYTES = 10;
const SIZE_OFFSET = 2;
/** Offset of commandCode in a command and responseCode in a response. */
const CODE_OFFSET = 6;

/**
 * Commands whose response handle area holds one new transient object, sequence or session: the
 * handle right after the response header (TPM_CC values, Part 2 §6.5.2; the response of each in
 * Part 3, section given).
 */
const CREATES_HANDLE: ReadonlySet<number> = new Set([
  0x176, // TPM2_StartAuthSession, §11.1
  0x157, // TPM2_Load, §12.2
  0x167, // TPM2_LoadExternal, §12.3
  0x191, // TPM2_CreateLoaded, §12.9
  0x15b, // TPM2_HMAC_Start, §17.2
  0x107, // TPM2_MAC_Start, §17.3
  0x186, // TPM2_HashSequenceStart, §17.4
  0x131, // TPM2_CreatePrimary, §24.1
  0x161, // TPM2_ContextLoad, §28.3
]);
/** TPM2_FlushContext (Part 3 §28.4): its one parameter is the handle, right after the header. */
const FLUSH_CONTEXT = 0x165;

/**
 * The first whole command or response in `buffered`, and what follows it; undefined while
 * incomplete. A size below the header length cannot come from a TPM stack: it throws RangeError.
 */
export function takeTpmFrame(buffered: Uint8Array): { readonly frame: Uint8Array; readonly rest: Uint8Array } | undefined {
  if (buffered.length < HEADER_BYTES) return undefined;
  const size = u32(buffered, SIZE_OFFSET);
  if (size < HEADER_BYTES) throw new RangeError(`TPM frame size ${size} is below the ${HEADER_BYTES}-byte header`);
  if (buffered.length < size) return undefined;
  return { frame: buffered.subarray(0, size), rest: buffered.subarray(size) };
}

function u32(bytes: Uint8Array, at: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.length).getUint32(at, false);
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

  /** Runs `task` after every earlier one finished: a client's command and its bookkeeping stay together. */
  serially<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  /** Sends one command (inside `serially`) and resolves with its response. */
  async send(command: Uint8Array): Promise<Uint8Array> {
    const socket = await this.#connected();
    return new Promise((resolve, reject) => {
      this.#pending = (r) => (r instanceof Error ? reject(r) : resolve(r));
      socket.write(command); // one write: swtpm reads a command with a single read()
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

/** Who created which transient handles, from the commands and responses that pass. */
class HandleLedger {
  readonly #owned = new Map<object, Set<number>>();

  /** Notes what a successful command created or flushed. */
  record(owner: object, command: Uint8Array, response: Uint8Array): void {
    if (command.length < HEADER_BYTES || response.length < HEADER_BYTES || u32(response, CODE_OFFSET) !== 0) return;
    const code = u32(command, CODE_OFFSET);
    if (CREATES_HANDLE.has(code) && response.length >= HEADER_BYTES + 4) {
      const handle = u32(response, HEADER_BYTES);
      // The TPM handed this value out again, so whoever held it before no longer does.
      this.#forget(handle);
      const set = this.#owned.get(owner) ?? new Set<number>();
      set.add(handle);
      this.#owned.set(owner, set);
    } else if (code === FLUSH_CONTEXT && command.length >= HEADER_BYTES + 4) {
      this.#forget(u32(command, HEADER_BYTES));
    }
  }

  /** The handles `owner` still holds; the ledger forgets them. */
  release(owner: object): number[] {
    const handles = [...(this.#owned.get(owner) ?? [])];
    this.#owned.delete(owner);
    return handles;
  }

  #forget(handle: number): void {
    for (const set of this.#owned.values()) set.delete(handle);
  }
}

/** swtpm control channel codes the proxy answers (swtpm include/swtpm/tpm_ioctl.h). */
const CMD_GET_CAPABILITY = 1;
const CMD_SET_LOCALITY = 5;
/** PTM_CAP_SET_LOCALITY: the one control command offered (tpm_ioctl.h). */
const PTM_CAP_SET_LOCALITY = 1n << 3n;
/** TPM 1.2 result codes the control channel answers with (swtpm's ctrlchannel.c does the same). */
const TPM_SUCCESS = 0;
const TPM_BAD_PARAMETER = 3;
const TPM_BAD_ORDINAL = 10;
const TPM_BAD_LOCALITY = 0x3d;

/** A running proxy. */
export interface TpmProxy {
  /** Address for `Tpm.open` and `imakeep run --tpm`: `swtpm:127.0.0.1:PORT`. */
  readonly address: string;
  /** tpm2-tools TCTI (`-T` or `TPM2TOOLS_TCTI`): `swtpm:host=127.0.0.1,port=TCTI_PORT`; control on TCTI_PORT + 1. */
  readonly tcti: string;
  /** Commands forwarded so far, flushes of departed clients included. */
  readonly commands: () => number;
  /** Closes the listeners, the clients and the swtpm connection. */
  close(): Promise<void>;
}

const HOST = '127.0.0.1';

/** Starts the proxy in front of swtpm's data port `upstreamHost:upstreamPort`. */
export async function startTpmProxy(upstreamHost: string, upstreamPort: number): Promise<TpmProxy> {
  const upstream = new Upstream(upstreamHost, upstreamPort);
  const ledger = new HandleLedger();
  const sockets = new Set<Socket>();
  let forwarded = 0;
  /** The TCTI instance now talking: objects made through the TCTI port belong to it. */
  let tctiClient: object = {};

  const flushAll = (handles: readonly number[]): Promise<void> =>
    upstream.serially(async () => {
      for (const flushHandle of handles) {
        await upstream.send(encodeCommand(FlushContext, { flushHandle })).catch(() => undefined); // already gone: nothing to do
        forwarded++;
      }
    });

  /**
   * Serves TPM commands on a data connection. `ownerOf()` names who owns what they create; with
   * `releaseOnClose`, the connection is that owner and its leftovers are flushed when it closes.
   */
  const serveData = (client: Socket, ownerOf: () => object, releaseOnClose: boolean): void => {
    sockets.add(client);
    client.setNoDelay(true);
    const reader = new FrameReader();
    // One outstanding command per connection (as swtpm itself requires), so answers go back in order.
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
        chain = chain
          .then(() =>
            upstream.serially(async () => {
              const response = await upstream.send(frame);
              forwarded++;
              ledger.record(ownerOf(), frame, response);
              return response;
            }),
          )
          .then((response) => void (client.destroyed || client.write(response)))
          .catch(() => client.destroy());
      }
    });
    client.on('error', () => client.destroy());
    client.on('close', () => {
      sockets.delete(client);
      if (releaseOnClose) void chain.then(() => flushAll(ledger.release(ownerOf())));
    });
  };

  const serveControl = (client: Socket): void => {
    sockets.add(client);
    client.once('data', (d: Buffer) => {
      client.end(controlAnswer(d, () => {
        // A new TCTI instance (one tool run): flush what the previous one left loaded.
        void flushAll(ledger.release(tctiClient));
        tctiClient = {};
      }));
    });
    client.on('error', () => client.destroy());
    client.on('close', () => sockets.delete(client));
  };

  const direct = createServer((client) => {
    const connection = {};
    serveData(client, () => connection, true);
  });
  await listen(direct, 0);
  const [tctiData, tctiControl] = await listenOnPortPair();
  tctiData.on('connection', (client: Socket) => serveData(client, () => tctiClient, false));
  tctiControl.on('connection', serveControl);
  const servers = [direct, tctiData, tctiControl];
  return {
    address: `swtpm:${HOST}:${portOf(direct)}`,
    tcti: `swtpm:host=${HOST},port=${portOf(tctiData)}`,
    commands: () => forwarded,
    async close() {
      for (const s of sockets) s.destroy();
      await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
      upstream.close();
    },
  };
}

/**
 * The control channel's answer to one message (`u32 code ‖ payload`, swtpm's protocol): GET_CAPABILITY
 * is 8 bytes of capability bits; SET_LOCALITY 0 succeeds (every client shares locality 0, the one
 * the proxy's connection has) and calls `onTctiStart`; another locality is TPM_BAD_LOCALITY; every
 * other command is TPM_BAD_ORDINAL, as swtpm answers a command it does not offer.
 */
export function controlAnswer(message: Uint8Array, onTctiStart: () => void): Uint8Array {
  const answer = (result: number): Uint8Array => Uint8Array.of(result >>> 24, (result >>> 16) & 0xff, (result >>> 8) & 0xff, result & 0xff);
  if (message.length < 4) return answer(TPM_BAD_PARAMETER);
  const code = u32(message, 0);
  if (code === CMD_GET_CAPABILITY) {
    const caps = new Uint8Array(8);
    new DataView(caps.buffer).setBigUint64(0, PTM_CAP_SET_LOCALITY, false);
    return caps;
  }
  if (code !== CMD_SET_LOCALITY) return answer(TPM_BAD_ORDINAL);
  if (message.length !== 5) return answer(TPM_BAD_PARAMETER);
  if (message[4] !== 0) return answer(TPM_BAD_LOCALITY);
  onTctiStart();
  return answer(TPM_SUCCESS);
}

function listen(server: Server, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, HOST, () => resolve());
  });
}

function portOf(server: Server): number {
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('the proxy is not listening on TCP');
  return address.port;
}
