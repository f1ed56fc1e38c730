/**
 * `imakeep verify`: offline verification, without the device.
 *
 *   imakeep verify BUNDLE... (--ak PEM | --enrollment FILE | --trust-on-first-use) [--strict] [--from-checkpoint STATE.json] [--state-out FILE] [--json]
 *   imakeep verify LOG --quote QUOTE.json (--ak PEM | --enrollment FILE | --trust-on-first-use) [--nonce TEXT] [--format binary|ascii] [--json]
 *
 * Bundles (from `imakeep export` or `GET /v1/evidence`) are verified in the order given, the state
 * carried from one to the next; `--state-out` saves the state, `--from-checkpoint` starts from a
 * saved one. A LOG (a kernel-format list, e.g. from `GET /v1/log`) is checked against a quote saved
 * from `GET /v1/quote` (Keylime format). The AK must be trusted: `--ak` pins it, or `--enrollment`
 * gives the AK an enrollment record (`imakeep enroll finish`) proved is on the device's TPM, and
 * bundles must then state the record's device id (`VERIFY_DEVICE_MISMATCH` otherwise); without either `VERIFY_AK`, unless `--trust-on-first-use` takes the evidence's own AK (and the
 * output says so). `--strict` refuses evidence quoted with the version-1 or version-2 nonce
 * (`VERIFY_UNSIGNED`), which is otherwise accepted with the fields no signature covers listed. Exit 0 when everything
 * verifies; 1 with the first failure.
 */
import { createReadStream } from 'node:fs';
import { open, readFile, writeFile } from 'node:fs/promises';
import { type KeyObject, createPublicKey } from 'node:crypto';
import { decodeEnrollmentRecord, trustedAkOfEnrollment } from '../enroll/index.js';
import { UsageError } from '../errors.js';
import { recordBatches } from '../ima/index.js';
import { decodePcrBlob } from '../tpm/index.js';
import {
  EvidenceVerifier,
  noTrustedAk,
  fleetKeyFromPem,
  trustedAkFromPem,
  verifyEarToken,
  verifyLogAgainstQuote,
  verifyStateFromJson,
  verifyStateToJson,
  VerifyError,
  type BundleReport,
  type VerifyState,
} from '../verify/index.js';
import { choiceOption, parseVerbArgs, writeStdout } from './_verb.js';
import { judgeBundleFiles } from './policy.js';

/** Usage of `imakeep verify`. */
export const usage = `usage: imakeep verify BUNDLE... (--ak PEM | --enrollment FILE | --trust-on-first-use) [--strict] [--from-checkpoint STATE.json | --from-token TOKEN --fleet-key PEM] [--state-out FILE] [--policy FILE] [--json]
       imakeep verify LOG --quote QUOTE.json (--ak PEM | --enrollment FILE | --trust-on-first-use) [--nonce TEXT] [--format binary|ascii] [--json]`;

/**
 * What the verifier holds the evidence to: the AK of `--ak PEM`, or of `--enrollment FILE` (the AK
 * the record proved) with the record's device id, if either is given.
 */
async function trustedDevice(ak: string | undefined, enrollment: string | undefined): Promise<{ ak: KeyObject | undefined; deviceId: string | undefined }> {
  if (ak !== undefined && enrollment !== undefined) throw new UsageError('give --ak or --enrollment, not both');
  if (enrollment !== undefined) {
    const record = decodeEnrollmentRecord(await readFile(enrollment, 'utf8'));
    return { ak: trustedAkOfEnrollment(record), deviceId: record.deviceId };
  }
  return { ak: ak === undefined ? undefined : trustedAkFromPem(await readFile(ak)), deviceId: undefined };
}

/**
 * True if the file starts like an evidence bundle: a CBOR map header (0xa1..0xbf) and its first
 * key, the text "format" (header 0x66 = text of 6 bytes, which reads as "f"). A binary list starts
 * with a little-endian PCR number, an ASCII list with a digit or a space.
 */
async function isBundle(path: string): Promise<boolean> {
  const file = await open(path, 'r');
  try {
    const head = Buffer.alloc(8);
    const { bytesRead } = await file.read(head, 0, 8, 0);
    return bytesRead === 8 && head[0] !== undefined && head[0] >= 0xa1 && head[0] <= 0xbf && head.subarray(1, 8).toString('latin1') === 'fformat';
  } finally {
    await file.close();
  }
}

function describeBundle(r: BundleReport): string {
  const parts = r.segments.map(
    (s) =>
      `boot ${s.boot} records ${s.from}..${s.to} (${s.chunks} chunks, checkpoints ${s.checkpoints.join(',') || 'none'}, start: ${s.start}` +
      `${s.binding === 'signed' ? '' : `; version-${s.binding === 'v1' ? 1 : 2} nonces, unsigned: ${s.unsigned.join(', ')}`})`,
  );
  return `${r.cursor} -> ${r.next}: ${parts.join('; ')}`;
}

/** A Keylime quote response (`{results: {quote, pubkey}}` or the results object itself). */
function parseKeylimeQuote(text: string): { attest: Uint8Array; signature: Uint8Array; blob: Uint8Array; pubkey: string | undefined } {
  const value: unknown = JSON.parse(text);
  const results = typeof value === 'object' && value !== null && 'results' in value ? value.results : value;
  if (typeof results !== 'object' || results === null || !('quote' in results) || typeof results.quote !== 'string') {
    throw new UsageError('--quote must be a Keylime quote response (JSON with results.quote)');
  }
  const [attest, signature, blob] = results.quote.replace(/^r/, '').split(':').map((p) => new Uint8Array(Buffer.from(p, 'base64')));
  if (attest === undefined || signature === undefined || blob === undefined) throw new UsageError('quote is not r<attest>:<signature>:<pcrs>');
  const pubkey = 'pubkey' in results && typeof results.pubkey === 'string' ? results.pubkey : undefined;
  return { attest, signature, blob, pubkey };
}

/**
 * Where verification starts: record 0, a saved verifier state, or the state a fleet's EAR token
 * vouches for (`verifyEarToken`: checked with the fleet's public key; TOKEN is the token or a file
 * holding it).
 */
async function startState(values: { 'from-checkpoint'?: string; 'from-token'?: string; 'fleet-key'?: string }): Promise<VerifyState | undefined> {
  const checkpoint = values['from-checkpoint'];
  const token = values['from-token'];
  if (checkpoint !== undefined && token !== undefined) throw new UsageError('--from-checkpoint and --from-token exclude each other');
  if (checkpoint !== undefined) return verifyStateFromJson(await readFile(checkpoint, 'utf8'));
  if (token === undefined) return undefined;
  const keyFile = values['fleet-key'];
  if (keyFile === undefined) throw new UsageError('--from-token needs --fleet-key PEM (GET /v1/key of the fleet)');
  // A JWS compact token has no '/' and exactly two dots; anything else names a file holding one.
  const text = /^[\w-]+\.[\w-]+\.[\w-]+$/.test(token) ? token : await readFile(token, 'utf8');
  return verifyEarToken(text, fleetKeyFromPem(await readFile(keyFile, 'utf8'))).state;
}

/** The `verify` verb: exit 0 when everything verifies, 1 with the first failure. */
export default async function verify(argv: string[]): Promise<number> {
  const { values, positionals } = parseVerbArgs(argv, {
    ak: { type: 'string' },
    'trust-on-first-use': { type: 'boolean' },
    strict: { type: 'boolean' },
    enrollment: { type: 'string' },
    json: { type: 'boolean' },
    'from-checkpoint': { type: 'string' },
    'from-token': { type: 'string' },
    'fleet-key': { type: 'string' },
    'state-out': { type: 'string' },
    quote: { type: 'string' },
    nonce: { type: 'string' },
    format: { type: 'string' },
    policy: { type: 'string' },
  });
  if (positionals.length === 0) throw new UsageError('give at least one BUNDLE or LOG');
  const { ak: trustedAk, deviceId } = await trustedDevice(values.ak, values.enrollment);
  const trustOnFirstUse = values['trust-on-first-use'] === true && trustedAk === undefined;
  const akWords = trustOnFirstUse ? 'trusted on first use (not pinned: give --ak or --enrollment)' : `trusted (pinned by ${values.enrollment === undefined ? '--ak' : '--enrollment'})`;
  const json = values.json === true;
  try {
    if (trustedAk === undefined && !trustOnFirstUse) throw noTrustedAk();
    const first = positionals[0] ?? '';
    if (values.quote !== undefined || !(await isBundle(first))) {
      if (values.quote === undefined) throw new UsageError(`${first} is not an evidence bundle; to check a log give --quote QUOTE.json`);
      if (positionals.length !== 1) throw new UsageError('give exactly one LOG with --quote');
      if (values.policy !== undefined) throw new UsageError('--policy judges bundles; judge a LOG with imakeep policy check');
      const format = choiceOption('format', values.format ?? 'binary', ['binary', 'ascii'] as const);
      const q = parseKeylimeQuote(await readFile(values.quote, 'utf8'));
      const ak = trustedAk ?? (q.pubkey === undefined ? undefined : createPublicKey(q.pubkey));
      if (ak === undefined) throw new UsageError('no AK: the quote response has no pubkey to trust on first use; give --ak');
      const report = await verifyLogAgainstQuote(recordBatches(createReadStream(first), { format }), {
        attest: q.attest,
        signature: q.signature,
        pcrs: decodePcrBlob(q.blob).values,
        ak,
        nonce: values.nonce === undefined ? null : new TextEncoder().encode(values.nonce),
      });
      await writeStdout(
        json
          ? `${JSON.stringify({ ok: true, log: report, akTrust: trustOnFirstUse ? 'first-use' : 'pinned' })}\n`
          : `OK: records 0..${report.matchedAt - 1} replay to the quoted PCR 10 (${report.banks.join(', ')}); ${report.records - report.matchedAt} records logged after the quote; AK ${akWords}\n`,
      );
      return 0;
    }
    const state = await startState(values);
    const verifier = new EvidenceVerifier({ trustedAk, deviceId, trustOnFirstUse, strict: values.strict === true, state });
    const reports: BundleReport[] = [];
    for (const path of positionals) {
      const report = verifier.verify(new Uint8Array(await readFile(path)));
      reports.push(report);
      if (!json) await writeStdout(`${path}: ${describeBundle(report)}\n`);
    }
    const end = verifier.state;
    if (values['state-out'] !== undefined && end !== undefined) await writeFile(values['state-out'], `${JSON.stringify(verifyStateToJson(end), null, 1)}\n`);
    const records = reports.flatMap((r) => r.segments).reduce((n, s) => n + (s.to - s.from), 0);
    const checkpoints = reports.flatMap((r) => r.segments).reduce((n, s) => n + s.checkpoints.length, 0);
    await writeStdout(
      json
        ? `${JSON.stringify({ ok: true, bundles: reports, state: end === undefined ? null : verifyStateToJson(end) })}\n`
        : `OK: ${reports.length} bundles, ${records} records, ${checkpoints} checkpoints verified; AK ${akWords}\n`,
    );
    // The verified records judged against a runtime policy (src/cli/policy.ts).
    return values.policy === undefined ? 0 : await judgeBundleFiles(positionals, values.policy, json);
  } catch (e) {
    if (!(json && e instanceof VerifyError)) throw e;
    await writeStdout(`${JSON.stringify({ ok: false, error: { code: e.code, message: e.message, details: e.details } })}\n`);
    return 1;
  }
}
