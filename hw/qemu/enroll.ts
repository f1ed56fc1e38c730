/**
 * Enrollment of the guest through the real kernel's `/dev/tpmrm0`, the device's two steps in the
 * guest and the verifier's two on the host, as a verifier meets a device it never saw:
 * 1. guest: `imakeep enroll request --tpm device:/dev/tpmrm0` (EK public and certificate read from
 *    the TPM's NV, AK public and name), sent to the host over the second serial port;
 * 2. host: `imakeep enroll challenge REQ --ca DIR` (EK certificate chain to swtpm's local CA, AK
 *    attributes, a credential only this TPM's EK can open), the challenge sent back;
 * 3. guest: `imakeep enroll answer CH --tpm device:/dev/tpmrm0` (ActivateCredential through the
 *    kernel's resource manager), the answer back with the results;
 * 4. host, after the boot: `imakeep enroll finish ANS`, the enrollment record.
 * The host also reads the EK certificate (tpm2_nvread) and recreates the EK (tpm2_createek) from
 * the guest's TPM after the VM stopped, with tpm2-tools, to compare with what the record holds.
 * test/qemu/boot.test.ts asserts on all of it.
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { SWTPM_LOCAL_CA } from '../swtpm.js';
import { GUEST_DEVICE_ID } from './collector.js';
import { GuestOutputError } from './errors.js';
import { runTool } from './exec.js';
import type { GuestNodeStep } from './guest-init.js';
import { GUEST_PATHS } from './initramfs.js';

/** The enrollment steps' names (each comes back as `/out/node-<name>/`). */
const STEP = { request: 'enroll-request', answer: 'enroll-answer' } as const;
/** Names of the enrollment steps, in the order they run. */
export const ENROLL_STEP_NAMES: readonly string[] = [STEP.request, STEP.answer];

const stepDir = (name: string): string => `/out/node-${name}`;
const GUEST_FILES = {
  request: `${stepDir(STEP.request)}/request.json`,
  challenge: `${stepDir(STEP.request)}/challenge.json`,
  answer: `${stepDir(STEP.answer)}/answer.json`,
} as const;

/**
 * The guest's steps: the request, sent to the host, whose challenge comes back; the answer. No
 * warm-up runs (each would be a second enrollment step; the records they add are collected later
 * like any others).
 */
export function enrollNodeSteps(): GuestNodeStep[] {
  const cli = `${GUEST_PATHS.app}/dist/src/cli.js`;
  const tpm = ['--tpm', 'device:/dev/tpmrm0'];
  return [
    {
      name: STEP.request,
      warmUp: false,
      argv: () => [cli, 'enroll', 'request', ...tpm, '--device-id', GUEST_DEVICE_ID, '--out', GUEST_FILES.request],
      exchange: { send: GUEST_FILES.request, receive: GUEST_FILES.challenge },
    },
    { name: STEP.answer, warmUp: false, argv: () => [cli, 'enroll', 'answer', GUEST_FILES.challenge, ...tpm, '--out', GUEST_FILES.answer] },
  ];
}

/** What the host saw of the enrollment. */
export interface HostEnrollment {
  /** Seconds the host's `imakeep enroll challenge` took, and `finish`. */
  challengeSeconds: number;
  finishSeconds: number;
  /** The enrollment record `finish` wrote. */
  record: string;
  /** The challenge command's stdout. */
  challengeOutput: string;
}

/** What tpm2-tools read from the guest's TPM on the host after the VM stopped. */
export interface HostTpmFacts {
  /** `tpm2_nvread` of the RSA EK certificate index 0x01C00002 (DER). */
  ekCertificate: Uint8Array;
  /** `tpm2_createek -G rsa -u`: the RSA EK (TCG template L-1) as TPM2B_PUBLIC. */
  ekPublic: Uint8Array;
}

/** The host's verifier side: a CA directory with swtpm's local CA, its state, the challenge and the finish. */
export class HostEnrollmentVerifier {
  readonly #cli: string;
  readonly #dir: string;
  readonly #caDir: string;
  readonly #stateDir: string;
  #challengeSeconds: number | undefined;
  #challengeOutput = '';

  constructor(cli: string, workDir: string) {
    this.#cli = cli;
    this.#dir = join(workDir, 'enroll-host');
    this.#caDir = join(this.#dir, 'ca');
    this.#stateDir = join(this.#dir, 'state');
    mkdirSync(this.#caDir, { recursive: true });
  }

  /**
   * Answers the guest's exchange: `imakeep enroll challenge` of the request it sent. The CA files
   * are copied at this point: swtpm_setup created the local CA before the boot if there was none.
   */
  readonly exchange = async (step: string, sent: Uint8Array): Promise<Uint8Array> => {
    if (step !== STEP.request) throw new GuestOutputError(step, 'is not an enrollment step that asks the host');
    for (const file of SWTPM_LOCAL_CA.certificates) copyFileSync(file, join(this.#caDir, basename(file)));
    const request = join(this.#dir, 'request.json');
    const challenge = join(this.#dir, 'challenge.json');
    writeFileSync(request, sent);
    const t0 = performance.now();
    const { stdout } = await runTool(process.execPath, [this.#cli, 'enroll', 'challenge', request, '--ca', this.#caDir, '--out', challenge, '--state', this.#stateDir]);
    this.#challengeSeconds = (performance.now() - t0) / 1000;
    this.#challengeOutput = stdout.trim();
    return new Uint8Array(readFileSync(challenge));
  };

  /** `imakeep enroll finish` of the answer the guest sent back with its results (`guestDir`). */
  async finish(guestDir: string): Promise<HostEnrollment> {
    if (this.#challengeSeconds === undefined) throw new GuestOutputError(guestDir, 'the guest never asked for a challenge');
    const answer = join(guestDir, GUEST_FILES.answer.replace(/^\/out\//, ''));
    const record = join(this.#dir, 'enrollment.json');
    const t0 = performance.now();
    await runTool(process.execPath, [this.#cli, 'enroll', 'finish', answer, '--out', record, '--state', this.#stateDir]);
    return { challengeSeconds: this.#challengeSeconds, finishSeconds: (performance.now() - t0) / 1000, record, challengeOutput: this.#challengeOutput };
  }
}

/** Reads the RSA EK certificate and recreates the RSA EK with tpm2-tools from swtpm's TCP data port. */
export async function readHostTpmFacts(port: number, outDir: string): Promise<HostTpmFacts> {
  mkdirSync(outDir, { recursive: true });
  const tcti = ['-T', `swtpm:host=127.0.0.1,port=${port}`];
  const cert = join(outDir, 'ek-rsa.der');
  const pub = join(outDir, 'ek-rsa.pub');
  await runTool('tpm2_nvread', [...tcti, '-C', 'o', '0x01c00002', '-o', cert]);
  await runTool('tpm2_createek', [...tcti, '-c', join(outDir, 'ek-rsa.ctx'), '-G', 'rsa', '-u', pub]);
  return { ekCertificate: new Uint8Array(readFileSync(cert)), ekPublic: new Uint8Array(readFileSync(pub)) };
}
