/**
 * `imakeep enroll request|challenge|answer|finish`: the enrollment exchange of `src/enroll` as
 * files, so that each side runs when it can (the device answers when it next syncs).
 *
 *   imakeep enroll request   [--tpm ADDR] --out REQ [--device-id ID] [--ek TEMPLATE] [--ak ecc|rsa]   (device)
 *   imakeep enroll challenge REQ --ca DIR --out CH [--state DIR] [--valid-days N]                       (verifier)
 *   imakeep enroll answer    CH [--tpm ADDR] --out ANS                                                  (device)
 *   imakeep enroll finish    ANS --out ENROLLMENT [--state DIR]                                         (verifier)
 *
 * The verifier keeps what it must remember between challenge and finish (the credential's
 * secret and the checked request) in its state directory, one file per challenge,
 * `STATE/<challenge id>.json`, mode 0600; `finish` removes it once used.
 */
import { readFileSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import {
  EnrollError,
  answerEnrollChallenge,
  createEnrollRequest,
  decodeEnrollAnswer,
  decodeEnrollChallenge,
  decodeEnrollPending,
  decodeEnrollRequest,
  encodeEnrollAnswer,
  encodeEnrollChallenge,
  encodeEnrollPending,
  encodeEnrollRequest,
  encodeEnrollmentRecord,
  finishEnrollment,
  loadCaDirectory,
  makeEnrollChallenge,
} from '../enroll/index.js';
import { UsageError } from '../errors.js';
import { EK_TEMPLATES, Tpm } from '../tpm/index.js';
import { choiceOption, deviceIdOption, integerOption, MACHINE_ID_PATH, parseVerbArgs, requireOptions, runSubcommand, tpmAddress, writeStdout } from './_verb.js';

/** Usage of `imakeep enroll` and its subcommands. */
export const usage = `usage: imakeep enroll request   [--tpm ADDR] --out REQ [--device-id ID] [--ek TEMPLATE] [--ak ecc|rsa]
       imakeep enroll challenge REQ --ca DIR --out CH [--state DIR] [--valid-days N]
       imakeep enroll answer    CH [--tpm ADDR] --out ANS
       imakeep enroll finish    ANS --out ENROLLMENT [--state DIR]
request and answer run on the device (ADDR: swtpm:HOST:PORT | device:/dev/tpmrm0, the default);
challenge and finish on the verifier. --device-id defaults to /etc/machine-id; --ek to the first
EK the TPM has a certificate for (${[...EK_TEMPLATES.keys()].join(', ')}); --ak must be the AK the
device quotes with (default ecc). --ca: the CA certificates the verifier trusts (.pem .crt .cer .der).
The verifier's pending challenges live in --state (default $XDG_STATE_HOME/imakeep/enroll or
~/.local/state/imakeep/enroll), one file per challenge, mode 0600; a challenge expires after
--valid-days (default 30).`;

function stateDir(given: string | undefined): string {
  return given ?? join(process.env.XDG_STATE_HOME ?? join(homedir(), '.local', 'state'), 'imakeep', 'enroll');
}

function onePositional(positionals: readonly string[], what: string): string {
  const [file] = positionals;
  if (file === undefined || positionals.length > 1) throw new UsageError(`expected one ${what} file`);
  return file;
}

function firstLine(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (e) {
    throw new UsageError(`cannot read ${path} for the ${what} (${e instanceof Error ? e.message : String(e)})`);
  }
}

async function request(argv: string[]): Promise<number> {
  const { values } = parseVerbArgs(argv, { tpm: { type: 'string' }, out: { type: 'string' }, 'device-id': { type: 'string' }, ek: { type: 'string' }, ak: { type: 'string' } }, false);
  const { out } = requireOptions(values, ['out']);
  const ekTemplate = values.ek === undefined ? undefined : choiceOption('ek', values.ek, [...EK_TEMPLATES.keys()]);
  const alg = choiceOption('ak', values.ak ?? 'ecc', ['ecc', 'rsa'] as const);
  const deviceId = deviceIdOption(values['device-id']);
  if (deviceId === undefined) throw new UsageError(`no device id: ${MACHINE_ID_PATH} cannot be read; pass --device-id`);
  const kernelBootId = firstLine('/proc/sys/kernel/random/boot_id', 'kernel boot id');
  const tpm = Tpm.open(tpmAddress(values.tpm));
  try {
    const req = await createEnrollRequest(tpm, { deviceId, kernelBootId, ak: { alg }, ...(ekTemplate === undefined ? {} : { ekTemplate }) });
    await writeFile(out, encodeEnrollRequest(req));
    await writeStdout(`request for device ${deviceId}: EK ${req.ekTemplate}, AK ${Buffer.from(req.akName).toString('hex')} -> ${out}\n`);
  } finally {
    await tpm.close();
  }
  return 0;
}

async function challenge(argv: string[]): Promise<number> {
  const { values, positionals } = parseVerbArgs(argv, { ca: { type: 'string' }, out: { type: 'string' }, state: { type: 'string' }, 'valid-days': { type: 'string' } });
  const { ca, out } = requireOptions(values, ['ca', 'out']);
  const days = integerOption('valid-days', values['valid-days'], 1);
  const req = decodeEnrollRequest(await readFile(onePositional(positionals, 'request'), 'utf8'));
  const made = makeEnrollChallenge(req, { anchors: await loadCaDirectory(ca), ...(days === undefined ? {} : { validForMs: days * 24 * 3600 * 1000 }) });
  const dir = stateDir(values.state);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFile(join(dir, `${made.challenge.challengeId}.json`), encodeEnrollPending(made.pending), { mode: 0o600 });
  await writeFile(out, encodeEnrollChallenge(made.challenge));
  await writeStdout(`challenge ${made.challenge.challengeId} for device ${req.deviceId} (EK certificate chain and AK checked), expires ${made.challenge.expiresAt} -> ${out}\n`);
  return 0;
}

async function answer(argv: string[]): Promise<number> {
  const { values, positionals } = parseVerbArgs(argv, { tpm: { type: 'string' }, out: { type: 'string' } });
  const { out } = requireOptions(values, ['out']);
  const ch = decodeEnrollChallenge(await readFile(onePositional(positionals, 'challenge'), 'utf8'));
  const tpm = Tpm.open(tpmAddress(values.tpm));
  try {
    await writeFile(out, encodeEnrollAnswer(await answerEnrollChallenge(tpm, ch)));
  } finally {
    await tpm.close();
  }
  await writeStdout(`challenge ${ch.challengeId} activated -> ${out}\n`);
  return 0;
}

async function finish(argv: string[]): Promise<number> {
  const { values, positionals } = parseVerbArgs(argv, { out: { type: 'string' }, state: { type: 'string' } });
  const { out } = requireOptions(values, ['out']);
  const ans = decodeEnrollAnswer(await readFile(onePositional(positionals, 'answer'), 'utf8'));
  const pendingFile = join(stateDir(values.state), `${ans.challengeId}.json`);
  let pendingText: string;
  try {
    pendingText = await readFile(pendingFile, 'utf8');
  } catch (e) {
    throw new EnrollError('ENROLL_UNKNOWN_CHALLENGE', `no pending challenge ${ans.challengeId} (${pendingFile}): finished already, or made with another --state`, {
      challengeId: ans.challengeId,
      deviceId: ans.deviceId,
    }, { cause: e });
  }
  const record = finishEnrollment(decodeEnrollPending(pendingText), ans);
  await writeFile(out, encodeEnrollmentRecord(record));
  await rm(pendingFile);
  await writeStdout(`device ${record.deviceId} enrolled: EK ${record.ekTemplate} certified by ${record.ekCertificatePath.length} CA certificate(s), AK ${Buffer.from(record.akName).toString('hex')} -> ${out}\n`);
  return 0;
}

/** `imakeep enroll <request|challenge|answer|finish> ...` */
export default function enrollVerb(argv: string[]): Promise<number> {
  return runSubcommand('enroll', { request, challenge, answer, finish }, argv);
}
