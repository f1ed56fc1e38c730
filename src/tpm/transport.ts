/**
 * Ways to reach a TPM. All carry the same raw command bytes (docs/tpm.md#transports): TCP to swtpm's data
 * port in tests and CI, the kernel resource manager `/dev/tpmrm0` on devices. Each transport
 * serializes: one command in flight, concurrent callers wait their turn (a TPM, and swtpm's single
 * data connection, take one outstanding command at a time).
 *
 * The transport interface is also the fault-injection seam: tests pass one that returns crafted
 * bytes.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { SerialQueue } from '../base/serial-queue.js';
import { MAX_RESPONSE_SIZE, RESPONSE_HEADER_SIZE } from './command.js';
import { TpmProtocolError, TpmTransportError } from './errors.js';

/** Sends one marshalled command and returns the whole response. */
export interface TpmTransport {
  /** Sends a complete command; resolves with the complete response (header included). */
  send(command: Uint8Array): Promise<Uint8Array>;
  /** Releases the connection or device; a later `send` may reopen it. */
  close(): Promise<void>;
}

/** Options of the TCP transport. */
export interface SwtpmTransportOptions {
  /** Give up on a response after this long (ms). Default 30 000: RSA key creation on swtpm takes ~30 ms, but CI is slow. */
  readonly timeoutMs?: number;
}

/**
 * swtpm's data port with raw framing (docs/tpm.md#swtpm): each command in ONE `socket.write` (swtpm
 * reads a command with a single read() and does not reassemble), then the 10-byte header, then
 * `responseSize - 10` bytes. Connects lazily and reconnects after the peer closes. swtpm serves
 * one data connection at a time: `close()` before another client (tpm2-tools) talks to it.
 */
export class SwtpmTcpTransport implements TpmTransport {
  private readonly queue = new SerialQueue();
  private socket: Socket | undefined;
  private readonly address: string;
  private readonly timeoutMs: number;

  constructor(
    readonly host: string,
    readonly port: number,
    options: SwtpmTransportOptions = {},
  ) {
    this.address = `swtpm:${host}:${port}`;
    this.timeoutMs = options.timeoutMs ?? 30_000;
  }

  send(command: Uint8Array): Promise<Uint8Array> {
    return this.queue.run(() => this.roundTrip(command));
  }

  close(): Promise<void> {
    return this.queue.run(async () => this.drop());
  }

  private drop(): void {
    this.socket?.destroy();
    this.socket = undefined;
  }

  private connected(): Promise<Socket> {
    const existing = this.socket;
    if (existing !== undefined && !existing.destroyed) return Promise.resolve(existing);
    return new Promise((resolve, reject) => {
      const socket = connect({ host: this.host, port: this.port, noDelay: true });
      const fail = (err: Error): void => {
        socket.destroy();
        reject(new TpmTransportError('TPM_TRANSPORT_OPEN', this.address, `cannot connect: ${err.message}`, { cause: err }));
      };
      socket.once('error', fail);
      socket.once('connect', () => {
        socket.off('error', fail);
        // Errors between commands only mark the socket dead; the next send reconnects.
        socket.on('error', () => socket.destroy());
        this.socket = socket;
        resolve(socket);
      });
    });
  }

  private async roundTrip(command: Uint8Array): Promise<Uint8Array> {
    const socket = await this.connected();
    return new Promise<Uint8Array>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let received = 0;
      let expected = -1;
      const finish = (err: Error | undefined, response?: Uint8Array): void => {
        clearTimeout(timer);
        socket.off('data', onData);
        socket.off('close', onClose);
        if (err !== undefined) {
          // The stream position is unknown now: never reuse this connection.
          this.drop();
          reject(err);
        } else if (response !== undefined) resolve(response);
      };
      const onData = (chunk: Buffer): void => {
        chunks.push(chunk);
        received += chunk.length;
        if (expected < 0 && received >= RESPONSE_HEADER_SIZE) {
          const head = Buffer.concat(chunks);
          expected = head.readUInt32BE(2);
          if (expected < RESPONSE_HEADER_SIZE || expected > MAX_RESPONSE_SIZE) {
            finish(new TpmProtocolError(`${this.address}: responseSize field ${expected} out of range`, 2));
            return;
          }
        }
        if (expected >= 0 && received >= expected) {
          if (received > expected) {
            finish(new TpmProtocolError(`${this.address}: ${received - expected} bytes after the response`, expected));
            return;
          }
          finish(undefined, new Uint8Array(Buffer.concat(chunks)));
        }
      };
      const onClose = (): void =>
        finish(new TpmTransportError('TPM_TRANSPORT_CLOSED', this.address, `connection closed after ${received} response bytes`));
      const timer = setTimeout(
        () => finish(new TpmTransportError('TPM_TRANSPORT_TIMEOUT', this.address, `no complete response in ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
      socket.on('data', onData);
      socket.on('close', onClose);
      socket.write(command);
    });
  }
}

/**
 * A TPM character device, normally `/dev/tpmrm0` (the kernel resource manager: transient handles
 * are virtualized and flushed when the fd closes). One `write` of the whole command, then one
 * `read` of up to 4096 bytes returns the whole response (Linux tpm-dev semantics, docs/tpm.md#transports).
 *
 * Threadpool: `fs.promises` runs each read/write on a libuv threadpool thread, and a TPM read
 * blocks its thread for the whole command (tens to hundreds of ms on discrete TPMs). Because this
 * transport keeps one command in flight, it holds at most ONE of the 4 pool threads at a time, so
 * fs, dns and zlib work elsewhere in the process keeps three threads. Position `null`: a character
 * device has no offset (no pwrite/pread).
 */
export class TpmDeviceTransport implements TpmTransport {
  private readonly queue = new SerialQueue();
  private handle: FileHandle | undefined;
  private readonly buffer = new Uint8Array(4096);

  constructor(readonly path: string) {}

  send(command: Uint8Array): Promise<Uint8Array> {
    return this.queue.run(async () => {
      const address = `device:${this.path}`;
      try {
        this.handle ??= await open(this.path, 'r+');
      } catch (err) {
        throw new TpmTransportError('TPM_TRANSPORT_OPEN', address, `cannot open: ${String(err)}`, { cause: err });
      }
      try {
        await this.handle.write(command, 0, command.length, null);
        const { bytesRead } = await this.handle.read(this.buffer, 0, this.buffer.length, null);
        return this.buffer.slice(0, bytesRead);
      } catch (err) {
        await this.closeHandle();
        throw new TpmTransportError('TPM_TRANSPORT_CLOSED', address, `I/O failed: ${String(err)}`, { cause: err });
      }
    });
  }

  close(): Promise<void> {
    return this.queue.run(() => this.closeHandle());
  }

  private async closeHandle(): Promise<void> {
    const h = this.handle;
    this.handle = undefined;
    await h?.close();
  }
}

/** The device used when no address is given: the kernel resource manager. */
export const DEFAULT_TPM_DEVICE = '/dev/tpmrm0';

/**
 * Opens a transport for a TPM address: `swtpm:HOST:PORT` (raw TCP to swtpm's data port) or
 * `device:PATH` (a TPM character device, normally `device:/dev/tpmrm0`). Nothing is connected
 * until the first command. Throws `TpmTransportError` `TPM_BAD_ADDRESS` for anything else.
 */
export function openTpmTransport(address: string): TpmTransport {
  const swtpm = /^swtpm:(.+):(\d{1,5})$/.exec(address);
  if (swtpm !== null) {
    const [, host = '', port = ''] = swtpm;
    const portNumber = Number(port);
    if (portNumber > 0 && portNumber < 65536) return new SwtpmTcpTransport(host, portNumber);
  }
  if (address.startsWith('device:/')) return new TpmDeviceTransport(address.slice('device:'.length));
  throw new TpmTransportError(
    'TPM_BAD_ADDRESS',
    address,
    'expected swtpm:HOST:PORT or device:/dev/tpmrm0',
  );
}
