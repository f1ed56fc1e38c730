/**
 * Self-enrollment on the fleet: the enrollment exchange of `src/enroll` (a request, a credential
 * only the device's TPM can activate, the proof) as two calls a device makes on first contact,
 * with the verifier's pending state kept in the fleet's database so that a device that goes
 * offline after receiving its challenge can answer days later (until the challenge expires).
 *
 * Who is admitted (README "Fleet"):
 * - the EK certificate must chain to a CA of the fleet's `--ca` directory and the AK must be
 *   proved by credential activation, always; without `--ca` self-enrollment is off
 *   (`FLEET_ENROLL_DISABLED`) and devices are enrolled by an operator with their AK;
 * - approval `auto` admits such a device at once; `manual` keeps it `pending` until an operator
 *   approves it (before it enrolls: pre-approval; or after);
 * - a device an operator refused is refused at every step (`FLEET_NOT_ENROLLED`, check `refused`);
 * - a device id is bound to the first EK certificate that enrolled under it: another TPM claiming
 *   it is `FLEET_ENROLL_CONFLICT`.
 *
 * Each enrolled device gets a bearer token (32 random bytes, base64url), returned once in the
 * answer; the fleet keeps only its SHA-256 and requires it on the device's routes (`http.ts`).
 */
import { createHash, randomBytes, timingSafeEqual, type X509Certificate } from 'node:crypto';
import {
  decodeEnrollPending,
  encodeEnrollPending,
  finishEnrollment,
  makeEnrollChallenge,
  type EnrollAnswer,
  type EnrollChallenge,
  type EnrollRequest,
} from '../enroll/index.js';
import { bytesEqual } from '../base/bytes.js';
import { EnrollError } from '../enroll/index.js';
import { FleetError } from './errors.js';
import type { DeviceRecord, Enrollment, FleetRepository } from './repository.js';

/** How devices that proved their AK are admitted. */
export type FleetApproval = 'auto' | 'manual';

/** Self-enrollment settings of the fleet. */
export interface FleetEnrollmentOptions {
  /** CA certificates an EK certificate must chain to (`loadCaDirectory`); without them self-enrollment is off. */
  readonly anchors?: readonly X509Certificate[];
  /** Default `auto`. */
  readonly approval?: FleetApproval;
  /** How long a challenge stays answerable; default `DEFAULT_CHALLENGE_VALIDITY_MS` (30 days). */
  readonly challengeValidityMs?: number;
}

/** What an answered challenge gives the device. */
export interface EnrolledDevice {
  readonly deviceId: string;
  /** `approved`: its evidence is accepted from now on; `pending`: once an operator approves it. */
  readonly enrollment: Enrollment;
  /** The bearer token of the device's routes; shown once, kept only as a hash. */
  readonly token: string;
}

/** SHA-256 of a bearer token, as the fleet keeps it. */
export function tokenHash(token: string): Uint8Array {
  return createHash('sha256').update(token, 'utf8').digest();
}

/** True when `token` is the one whose hash the device holds. */
export function tokenMatches(device: DeviceRecord, token: string | undefined): boolean {
  if (device.tokenHash === null || token === undefined) return false;
  return timingSafeEqual(tokenHash(token), device.tokenHash);
}

/**
 * A device id the fleet accepts: in URL paths and database keys alike. It starts with a letter or
 * digit, so no id is `.` or `..` (ids are never file names, but they appear in paths).
 */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

function refused(deviceId: string): FleetError {
  return new FleetError('FLEET_NOT_ENROLLED', `device ${deviceId} was refused by an operator`, { deviceId, check: 'refused' });
}

/** The enrollment exchange over the fleet's repository. */
export class FleetEnrollment {
  readonly #repository: FleetRepository;
  readonly #options: FleetEnrollmentOptions;
  readonly #now: () => Date;

  constructor(repository: FleetRepository, options: FleetEnrollmentOptions, now: () => Date) {
    this.#repository = repository;
    this.#options = options;
    this.#now = now;
  }

  /** True when devices may enroll themselves (a CA directory was given). */
  get enabled(): boolean {
    return this.#options.anchors !== undefined && this.#options.anchors.length > 0;
  }

  /**
   * Checks the request (AK attributes, EK certificate chain to the fleet's CAs, EK = certificate's
   * key) and keeps a challenge for it. Throws `FLEET_ENROLL_DISABLED`, `FLEET_NOT_ENROLLED`
   * (refused), `FLEET_ENROLL_CONFLICT`, or the `ENROLL_*` code of the failed check.
   */
  async request(request: EnrollRequest): Promise<EnrollChallenge> {
    const anchors = this.#options.anchors;
    if (anchors === undefined || anchors.length === 0) {
      throw new FleetError('FLEET_ENROLL_DISABLED', 'this fleet has no CA directory (--ca): devices are enrolled by an operator', { deviceId: request.deviceId, check: 'enroll' });
    }
    if (!DEVICE_ID_PATTERN.test(request.deviceId)) {
      throw new EnrollError('ENROLL_BAD_FILE', 'enroll request: device_id must be 1..128 of A-Z a-z 0-9 . _ : -, starting with a letter or digit', { field: 'device_id' });
    }
    await this.#admissible(request.deviceId, request.ekCertificate);
    const now = this.#now();
    const { challenge, pending } = makeEnrollChallenge(request, {
      anchors,
      now,
      ...(this.#options.challengeValidityMs === undefined ? {} : { validForMs: this.#options.challengeValidityMs }),
    });
    await this.#repository.putEnrollChallenge({ challengeId: challenge.challengeId, deviceId: request.deviceId, pending: encodeEnrollPending(pending), expiresAt: new Date(pending.expiresAt) });
    return challenge;
  }

  /**
   * Checks the device's proof against the kept challenge and enrolls the AK it proved. Throws
   * `ENROLL_UNKNOWN_CHALLENGE` (none kept, or answered already), `ENROLL_CHALLENGE_EXPIRED`,
   * `ENROLL_ACTIVATION_FAILED`, `FLEET_NOT_ENROLLED` (refused meanwhile), `FLEET_ENROLL_CONFLICT`.
   */
  async answer(challengeId: string, answer: EnrollAnswer): Promise<EnrolledDevice> {
    const kept = await this.#repository.enrollChallenge(challengeId);
    if (kept === undefined || answer.challengeId !== challengeId) {
      throw new EnrollError('ENROLL_UNKNOWN_CHALLENGE', `no pending challenge ${challengeId.slice(0, 64)} (answered already, or never made by this fleet)`, {
        challengeId: challengeId.slice(0, 64),
        deviceId: answer.deviceId.slice(0, 128),
      });
    }
    const pending = decodeEnrollPending(kept.pending);
    const record = finishEnrollment(pending, answer, this.#now());
    const existing = await this.#admissible(record.deviceId, record.ekCertificate);
    const approval = this.#options.approval ?? 'auto';
    const enrollment: Enrollment = existing?.enrollment === 'approved' || approval === 'auto' ? 'approved' : 'pending';
    const token = randomBytes(32).toString('base64url');
    const device = await this.#repository.completeEnrollment(challengeId, record.deviceId, {
      enrollment,
      akPublic: record.akPublic,
      ekCertificate: record.ekCertificate,
      tokenHash: tokenHash(token),
    });
    if (device === undefined) {
      throw new EnrollError('ENROLL_UNKNOWN_CHALLENGE', `challenge ${challengeId} was answered meanwhile`, { challengeId, deviceId: record.deviceId });
    }
    return { deviceId: device.id, enrollment: device.enrollment, token };
  }

  /** Operator: approves (pre-approves, before the device enrolls) or refuses a device, or puts it back to pending. */
  async decide(deviceId: string, enrollment: Enrollment): Promise<DeviceRecord> {
    return this.#repository.putDevice(deviceId, { enrollment });
  }

  /** The device's row, after checking that it may enroll with this EK certificate. */
  async #admissible(deviceId: string, ekCertificate: Uint8Array): Promise<DeviceRecord | undefined> {
    const existing = await this.#repository.device(deviceId);
    if (existing === undefined) return undefined;
    if (existing.enrollment === 'refused') throw refused(deviceId);
    if (existing.ekCertificate !== null && !bytesEqual(existing.ekCertificate, ekCertificate)) {
      throw new FleetError('FLEET_ENROLL_CONFLICT', `device id ${deviceId} is enrolled with another TPM's EK certificate`, { deviceId, check: 'ek-certificate' });
    }
    return existing;
  }
}
