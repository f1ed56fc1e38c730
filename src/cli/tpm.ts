/**
 * `imakeep tpm pcrread|quote|verify`: thin wrapper over `src/tpm`.
 *
 *   imakeep tpm pcrread [--tpm ADDR] [--pcrs sha1:10,sha256:10] [--json]
 *   imakeep tpm quote   [--tpm ADDR] --nonce HEX [--pcrs sha256:10] --out DIR [--ak ecc|rsa]
 *   imakeep tpm verify  DIR --nonce HEX [--ak FILE] [--json]
 *
 * ADDR is `swtpm:HOST:PORT` or `device:/dev/tpmrm0` (the default when that device exists).
 * A quote directory holds `attest.bin` (TPMS_ATTEST), `sig.bin` (TPMT_SIGNATURE), `pcrs.bin`
 * (tpm2-tools PCR file) and `ak.pem` (SPKI), so `tpm2_checkquote -u ak.pem -m attest.bin
 * -s sig.bin -f pcrs.bin -g sha256 -q NONCE` accepts it; `verify` also accepts the names of the
 * tpm2-tools manual (`quote.msg`, `quote.sig`, `quote.pcrs`).
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createPublicKey } from 'node:crypto';
import { join } from 'node:path';
import { UsageError } from '../errors.js';
import type { BankName } from '../ima/record.js';
import {
  type PcrRef,
  Tpm,
  decodePcrBlob,
  encodePcrBlob,
  publicKeyFromTpm2b,
  verifyQuote,
} from '../tpm/index.js';
import { bankArg, choiceOption, parseVerbArgs, requireOptions, runSubcommand, tpmAddress, writeStdout } from './_verb.js';

/** Usage of `imakeep tpm` and its subcommands. */
export const usage = `usage: imakeep tpm pcrread [--tpm ADDR] [--pcrs sha1:10,sha256:10] [--json]
       imakeep tpm quote   [--tpm ADDR] --nonce HEX [--pcrs sha256:10] --out DIR [--ak ecc|rsa]
       imakeep tpm verify  DIR --nonce HEX [--ak ak.pem] [--json]
ADDR: swtpm:HOST:PORT | device:/dev/tpmrm0 (default when present)
pcrread without --pcrs reads PCR 10 of every active bank.
A quote directory holds attest.bin, sig.bin, pcrs.bin (tpm2-tools PCR file) and ak.pem;
verify also accepts tpm2-tools' quote.msg, quote.sig, quote.pcrs.`;

/**
 * Parses a PCR list: `sha1:10,sha256:10` or tpm2-tools' `sha256:10,11+sha1:10` (a bare number
 * belongs to the bank named before it).
 */
function parsePcrSpec(spec: string): PcrRef[] {
  const refs: PcrRef[] = [];
  let bank: BankName | undefined;
  for (const token of spec.split(/[+,]/)) {
    const [name, index] = token.includes(':') ? token.split(':', 2) : [undefined, token];
    if (name !== undefined) bank = bankArg(name, `PCR list '${spec}'`);
    const pcr = Number(index);
    if (bank === undefined || index === undefined || !/^\d+$/.test(index) || pcr > 23) {
      throw new UsageError(`bad PCR list '${spec}': expected e.g. sha1:10,sha256:10`);
    }
    refs.push({ bank, pcr });
  }
  return refs;
}

function parseHex(name: string, hex: string): Uint8Array {
  if (!/^([0-9a-fA-F]{2})+$/.test(hex)) throw new UsageError(`--${name} must be an even number of hex digits`);
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

async function pcrread(argv: string[]): Promise<number> {
  const { values } = parseVerbArgs(argv, { tpm: { type: 'string' }, pcrs: { type: 'string' }, json: { type: 'boolean' } }, false);
  const tpm = Tpm.open(tpmAddress(values.tpm));
  try {
    const refs = values.pcrs !== undefined
      ? parsePcrSpec(values.pcrs)
      : (await tpm.getActiveBanks()).map((bank) => ({ bank, pcr: 10 }));
    const read = await tpm.pcrRead(refs);
    await writeStdout(
      values.json === true
        ? `${JSON.stringify(read.map((v) => ({ bank: v.bank, pcr: v.pcr, value: hex(v.value) })))}\n`
        : read.map((v) => `${v.bank}:${v.pcr} ${hex(v.value)}\n`).join(''),
    );
    return 0;
  } finally {
    await tpm.close();
  }
}

async function quote(argv: string[]): Promise<number> {
  const { values } = parseVerbArgs(
    argv,
    { tpm: { type: 'string' }, nonce: { type: 'string' }, pcrs: { type: 'string' }, out: { type: 'string' }, ak: { type: 'string' } },
    false,
  );
  const { out, nonce: nonceHex } = requireOptions(values, ['nonce', 'out']);
  const nonce = parseHex('nonce', nonceHex);
  const alg = choiceOption('ak', values.ak ?? 'ecc', ['ecc', 'rsa'] as const);
  const pcrs = parsePcrSpec(values.pcrs ?? 'sha256:10');
  const tpm = Tpm.open(tpmAddress(values.tpm));
  try {
    const q = await tpm.withAk({ alg }, (ak) => tpm.quote({ nonce, pcrs, ak }));
    const pem = publicKeyFromTpm2b(q.akPublic).export({ type: 'spki', format: 'pem' });
    await mkdir(out, { recursive: true });
    await Promise.all([
      writeFile(join(out, 'attest.bin'), q.attest),
      writeFile(join(out, 'sig.bin'), q.signature),
      writeFile(join(out, 'pcrs.bin'), encodePcrBlob(q.pcrs)),
      writeFile(join(out, 'ak.pem'), pem),
    ]);
    await writeStdout(q.pcrs.map((v) => `${v.bank}:${v.pcr} ${hex(v.value)}\n`).join(''));
    return 0;
  } finally {
    await tpm.close();
  }
}

/** Reads the first of `names` that exists in `dir`. */
async function readOneOf(dir: string, names: readonly string[]): Promise<Uint8Array> {
  const found = names.find((n) => existsSync(join(dir, n)));
  if (found === undefined) throw new UsageError(`${dir} has none of ${names.join(', ')}`);
  return new Uint8Array(await readFile(join(dir, found)));
}

async function verify(argv: string[]): Promise<number> {
  const { values, positionals } = parseVerbArgs(argv, { nonce: { type: 'string' }, ak: { type: 'string' }, json: { type: 'boolean' } });
  const [dir] = positionals;
  if (dir === undefined || positionals.length > 1) throw new UsageError('expected one quote directory');
  const nonce = parseHex('nonce', requireOptions(values, ['nonce']).nonce);
  const [attest, signature, pcrBlob, akPem] = await Promise.all([
    readOneOf(dir, ['attest.bin', 'quote.msg']),
    readOneOf(dir, ['sig.bin', 'quote.sig']),
    readOneOf(dir, ['pcrs.bin', 'quote.pcrs']),
    values.ak !== undefined ? readFile(values.ak) : readOneOf(dir, ['ak.pem']),
  ]);
  const pcrs = decodePcrBlob(pcrBlob).values;
  const parsed = verifyQuote({ attest, signature, akPublic: createPublicKey(Buffer.from(akPem)), nonce, pcrs });
  const summary = {
    ok: true,
    clock: parsed.clockInfo.clock.toString(),
    resetCount: parsed.clockInfo.resetCount,
    restartCount: parsed.clockInfo.restartCount,
    safe: parsed.clockInfo.safe,
    firmwareVersion: parsed.firmwareVersion.toString(16),
    pcrs: pcrs.map((v) => ({ bank: v.bank, pcr: v.pcr, value: hex(v.value) })),
  };
  await writeStdout(
    values.json === true
      ? `${JSON.stringify(summary)}\n`
      : `quote OK: clock ${summary.clock} resetCount ${summary.resetCount} restartCount ${summary.restartCount}\n` +
          summary.pcrs.map((v) => `${v.bank}:${v.pcr} ${v.value}\n`).join(''),
  );
  return 0;
}

const SUBCOMMANDS: Readonly<Record<string, (argv: string[]) => Promise<number>>> = { pcrread, quote, verify };

/** `imakeep tpm <pcrread|quote|verify> ...` */
export default function tpmVerb(argv: string[]): Promise<number> {
  return runSubcommand('tpm', SUBCOMMANDS, argv);
}
