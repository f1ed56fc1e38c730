/**
 * The fleet service without HTTP: pushes, acknowledgements, freshness challenges and the device
 * views, over a {@link FleetRepository}. `http.ts` exposes it; tests and the bench can call it
 * directly.
 *
 * The acknowledgement is the EAR token (`verify/token.ts`) signed inside the push transaction and
 * handed out only once that transaction committed: a device that deletes on an acknowledgement
 * never loses evidence the fleet lacks. A push of several bundles commits each on its own, so a
 * cut keeps what was accepted before it; the answer names the last one.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { fromHex, toHex, BANKS } from '../ima/index.js';
import { formatCursor } from '../serve/index.js';
import { publicKeyFromTpm2b, QuoteVerifyError, verifyQuote, parseQuoteAttest } from '../tpm/index.js';
import { signEarToken, verifyStateFromJson, verifyStateToJson, type EarStatus } from '../verify/index.js';
import { FleetError } from './errors.js';
import { parseRuntimePolicy, PolicyError, type RuntimePolicy } from '../policy/index.js';
import { FleetEnrollment, type FleetEnrollmentOptions } from './enrollment.js';
import { acceptBundle } from './ingest.js';
import type { DeviceEnrollment, DeviceRecord, FleetRepository, Verdict } from './repository.js';

/** Who signs: the `ear.verifier-id` claim. */
const VERIFIER_ID = { developer: 'imakeep', build: 'imakeep fleet 0.1.0' } as const;

/** Bytes of a freshness nonce (the TPM's qualifying data holds up to a digest, Part 2 §10.4.3). */
const NONCE_BYTES = 32;

/** The answer to an accepted push. */
export interface PushAck {
  /** The EAR token: the signed acknowledgement of everything up to `cursor`. */
  readonly token: string;
  /** Where the fleet's verified evidence of the device now ends: the next push starts here. */
  readonly cursor: string;
  readonly seq: number;
  /** Records this push added (all its bundles). */
  readonly records: number;
  readonly bundles: number;
  readonly verdict: Verdict;
  /** A nonce to quote over for freshness (POST /v1/devices/{id}/quote). */
  readonly challenge: string;
}

/** A quote a device answers a challenge with (hex fields). */
export interface FreshQuoteAnswer {
  readonly attest: string;
  readonly signature: string;
  readonly pcrs: readonly { readonly bank: string; readonly pcr: number; readonly value: string }[];
}

/** A device as `/v1/devices/{id}` shows it. */
export interface DeviceView {
  readonly id: string;
  readonly enrollment: DeviceRecord['enrollment'];
  readonly keys: { readonly ak: string | null; readonly ekCertificate: boolean };
  readonly verifiedUpTo: { readonly cursor: string; readonly boot: number; readonly index: number; readonly records: number } | null;
  readonly verdict: Verdict;
  readonly failures: DeviceRecord['failures'];
  readonly policy: boolean;
  readonly lastSeen: string | null;
  /** The newest quote over the fleet's own nonce, and its age in seconds when asked. */
  readonly freshness: { readonly quotedAt: string; readonly ageSeconds: number } | null;
  readonly acknowledgements: number;
}

/** Options of {@link FleetService}. */
export interface FleetServiceOptions {
  /** Clock (tests). */
  readonly now?: () => Date;
  /** Self-enrollment (`enrollment.ts`): the CAs EK certificates must chain to, and how devices are admitted. */
  readonly enrollment?: FleetEnrollmentOptions;
}

/** The EAR trust tier of a device's verdict (draft-ietf-rats-ear §3.1). */
export function earStatus(verdict: Verdict, judged: boolean): EarStatus {
  if (verdict === 'fail') return 'contraindicated';
  if (verdict === 'pending') return 'none';
  // The log verified, but no policy judged what it measured.
  return judged ? 'affirming' : 'warning';
}

/** The device's runtime policy; one the fleet stored that no longer loads is the database's fault. */
function policyOf(device: DeviceRecord, text: string): RuntimePolicy {
  try {
    return parseRuntimePolicy(text);
  } catch (e) {
    if (e instanceof PolicyError) throw new FleetError('FLEET_SCHEMA', `device ${device.id}: its stored policy does not load (${e.message})`, { deviceId: device.id, check: 'policy', causeCode: e.code }, { cause: e });
    throw e;
  }
}

/** The fleet's operations. */
export class FleetService {
  readonly repository: FleetRepository;
  readonly #key: KeyObject;
  /** The fleet's public key (SPKI PEM): what relying parties and `verify --from-token` check tokens with. */
  readonly publicKeyPem: string;
  readonly #options: FleetServiceOptions;
  /** The enrollment exchange and the operator's decisions. */
  readonly enrollments: FleetEnrollment;

  private constructor(repository: FleetRepository, key: KeyObject, options: FleetServiceOptions) {
    this.repository = repository;
    this.enrollments = new FleetEnrollment(repository, options.enrollment ?? {}, () => this.#now());
    this.#key = key;
    this.publicKeyPem = createPublicKey(key).export({ type: 'spki', format: 'pem' }).toString();
    this.#options = options;
  }

  /** The service over `repository`, with the fleet key the database holds (made on first use). */
  static async open(repository: FleetRepository, options: FleetServiceOptions = {}): Promise<FleetService> {
    const pem = await repository.signingKey(() =>
      generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    );
    return new FleetService(repository, createPrivateKey(pem), options);
  }

  #now(): Date {
    return this.#options.now?.() ?? new Date();
  }

  /**
   * Operator: enrolls, approves or refuses a device, and assigns its runtime policy (a Keylime
   * runtime policy, checked here: `POLICY_*` errors for one that does not load).
   */
  async enroll(id: string, enrollment: DeviceEnrollment): Promise<DeviceRecord> {
    if (typeof enrollment.policy === 'string') parseRuntimePolicy(enrollment.policy);
    return this.repository.putDevice(id, enrollment);
  }

  /**
   * Accepts the bundles one after the other, each in its own transaction; throws the first
   * refusal (bundles before it stay accepted: the device resumes at its `details.cursor`).
   */
  async push(deviceId: string, bundles: AsyncIterable<Uint8Array>): Promise<PushAck> {
    let last: Omit<PushAck, 'records' | 'bundles'> | undefined;
    let records = 0;
    let count = 0;
    for await (const bytes of bundles) {
      try {
        const ack = await this.#pushOne(deviceId, bytes);
        records += ack.records;
        last = ack;
        count++;
      } catch (e) {
        if (e instanceof FleetError) throw new FleetError(e.code, e.message, { ...e.details, bundle: count }, { cause: e.cause });
        throw e;
      }
    }
    if (last === undefined) throw new FleetError('FLEET_BUNDLE_CORRUPT', `device ${deviceId}: the push holds no bundle`, { deviceId, check: 'empty-body' });
    return { ...last, records, bundles: count };
  }

  async #pushOne(deviceId: string, bytes: Uint8Array): Promise<Omit<PushAck, 'bundles'>> {
    return this.repository.withDevice(deviceId, async (tx) => {
      const device = tx.device;
      const policy = device.policy === null ? undefined : policyOf(device, device.policy);
      const accepted = await acceptBundle(tx, bytes, policy);
      const now = this.#now();
      const seq = device.ackSeq + 1;
      const recordsVerified = device.recordsVerified + accepted.records;
      const failures = [...device.failures, ...accepted.failures];
      const verified = verifyStateToJson(accepted.state);
      const cursor = formatCursor(accepted.state.cursor);
      const token = signEarToken(
        {
          deviceId,
          status: earStatus(accepted.verdict, policy !== undefined),
          policyId: device.policy === null ? null : `sha256:${createHash('sha256').update(device.policy).digest('hex')}`,
          verified,
          recordsVerified,
          seq,
          freshAt: device.freshAt === null ? null : Math.floor(device.freshAt.getTime() / 1000),
        },
        this.#key,
        VERIFIER_ID,
        now,
      );
      const challenge = randomBytes(NONCE_BYTES);
      await tx.addVerdict({ seq, cursor: accepted.report.cursor, next: cursor, records: accepted.records, verdict: accepted.verdict, failures: accepted.failures });
      await tx.addAck({ seq, cursor, token });
      await tx.update({ state: JSON.stringify(verified), recordsVerified, verdict: accepted.verdict, failures, ackSeq: seq, lastSeen: now, freshNonce: challenge });
      return { token, cursor, seq, records: accepted.records, verdict: accepted.verdict, challenge: toHex(challenge) };
    });
  }

  /** A new freshness nonce for the device to quote over (hex). */
  async challenge(deviceId: string): Promise<string> {
    const nonce = randomBytes(NONCE_BYTES);
    await this.repository.withDevice(deviceId, (tx) => tx.update({ freshNonce: nonce, lastSeen: this.#now() }));
    return toHex(nonce);
  }

  /**
   * Checks a quote over the device's outstanding nonce with its enrolled AK; records when.
   * Throws `FLEET_STALE_QUOTE` (wrong nonce, bad signature, unsafe clock) or `FLEET_NOT_ENROLLED`.
   */
  async answer(deviceId: string, answer: FreshQuoteAnswer): Promise<Date> {
    return this.repository.withDevice(deviceId, async (tx) => {
      const device = tx.device;
      if (device.enrollment !== 'approved' || device.akPublic === null) {
        throw new FleetError('FLEET_NOT_ENROLLED', `device ${deviceId} is ${device.enrollment}`, { deviceId, check: 'enrollment' });
      }
      const stale = (message: string, cause?: unknown): FleetError =>
        new FleetError('FLEET_STALE_QUOTE', `device ${deviceId}: ${message}`, { deviceId, check: 'fresh-quote' }, cause === undefined ? undefined : { cause });
      const nonce = device.freshNonce;
      if (nonce === null) throw stale('no challenge is outstanding');
      const attest = fromHex(answer.attest);
      const signature = fromHex(answer.signature);
      const pcrs = answer.pcrs.map((p) => ({ bank: BANKS.find((b) => b === p.bank), pcr: p.pcr, value: fromHex(p.value) }));
      if (attest === null || signature === null || pcrs.some((p) => p.bank === undefined || p.value === null)) throw stale('attest, signature and pcrs must be hex and known banks');
      try {
        verifyQuote({
          attest,
          signature,
          akPublic: publicKeyFromTpm2b(device.akPublic),
          nonce,
          pcrs: pcrs.flatMap((p) => (p.bank === undefined || p.value === null ? [] : [{ bank: p.bank, pcr: p.pcr, value: p.value }])),
        });
      } catch (e) {
        if (e instanceof QuoteVerifyError) throw stale(e.message, e);
        throw e;
      }
      if (!parseQuoteAttest(attest).clockInfo.safe) throw stale('the TPM clock is not safe');
      const now = this.#now();
      await tx.update({ freshNonce: null, freshAt: now, lastSeen: now });
      return now;
    });
  }

  /** A device as the API shows it; `FLEET_UNKNOWN_DEVICE` if absent. */
  async view(deviceId: string): Promise<DeviceView> {
    const device = await this.repository.device(deviceId);
    if (device === undefined) throw new FleetError('FLEET_UNKNOWN_DEVICE', `no device '${deviceId.slice(0, 64)}'`, { deviceId });
    return this.viewOf(device);
  }

  /** The view of a device row. */
  viewOf(device: DeviceRecord): DeviceView {
    const state = device.state === null ? undefined : verifyStateFromJson(device.state);
    const now = this.#now();
    return {
      id: device.id,
      enrollment: device.enrollment,
      keys: { ak: device.akPublic === null ? null : toHex(device.akPublic), ekCertificate: device.ekCertificate !== null },
      verifiedUpTo:
        state === undefined ? null : { cursor: formatCursor(state.cursor), boot: state.cursor.boot, index: state.cursor.index, records: device.recordsVerified },
      verdict: device.verdict,
      failures: device.failures,
      policy: device.policy !== null,
      lastSeen: device.lastSeen?.toISOString() ?? null,
      freshness:
        device.freshAt === null ? null : { quotedAt: device.freshAt.toISOString(), ageSeconds: Math.max(0, Math.floor((now.getTime() - device.freshAt.getTime()) / 1000)) },
      acknowledgements: device.ackSeq,
    };
  }
}
