/** Shared test fixtures and fakes for the TPM tests (not a test file itself). */
import { readFileSync } from 'node:fs';
import type { TpmTransport } from '../../src/tpm/index.js';

/** Source fixture directory (tests run from dist/, fixtures stay in test/). */
export const FIXTURES = new URL('../../../test/tpm/fixtures/', import.meta.url);

/** A recorded swtpm exchange (see fixtures/README.md). */
export interface Exchange {
  readonly label: string;
  readonly command: Uint8Array;
  readonly response: Uint8Array;
}

/** All recorded exchanges, in order. */
export function exchanges(): Exchange[] {
  const raw: unknown = JSON.parse(readFileSync(new URL('swtpm-exchanges.json', FIXTURES), 'utf8'));
  if (!Array.isArray(raw)) throw new Error('bad fixture');
  return raw.map((e: { label: string; command: string; response: string }) => ({
    label: e.label,
    command: new Uint8Array(Buffer.from(e.command, 'hex')),
    response: new Uint8Array(Buffer.from(e.response, 'hex')),
  }));
}

/** The first exchange with `label` (and command code `cc`, if given). */
export function exchange(label: string, cc?: number): Exchange {
  const found = exchanges().find((e) => e.label === label && (cc === undefined || Buffer.from(e.command).readUInt32BE(6) === cc));
  if (found === undefined) throw new Error(`no fixture ${label}`);
  return found;
}

/** A file of the tpm2-tools quote fixture. */
export function tpm2ToolsQuoteFile(name: string): Uint8Array {
  return new Uint8Array(readFileSync(new URL(`tpm2-tools-quote/${name}`, FIXTURES)));
}

/** A transport that answers from a script: each `send` returns the next response (or throws it). */
export class ScriptedTransport implements TpmTransport {
  readonly sent: Uint8Array[] = [];
  closed = 0;

  constructor(private readonly responses: (Uint8Array | Error)[]) {}

  async send(command: Uint8Array): Promise<Uint8Array> {
    this.sent.push(command);
    const next = this.responses.shift();
    if (next === undefined) throw new Error('ScriptedTransport: no response left');
    if (next instanceof Error) throw next;
    return next;
  }

  async close(): Promise<void> {
    this.closed++;
  }
}

/** Hex of bytes. */
export const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** Bytes of hex (spaces allowed). */
export const unhex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h.replace(/\s+/g, ''), 'hex'));
