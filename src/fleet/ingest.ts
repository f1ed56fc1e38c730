/**
 * Accepting one evidence bundle from a device: verified incrementally from where the device's
 * verified chain ends on the fleet (its kept `VerifyState`: cursor and global index, PCR values of
 * every bank, last chunk hash, last checkpoint's quote for the nonce chain and the TPM clock and
 * reset/restart counts), never again from record 0, then stored with its verdict and
 * acknowledgement in the same transaction, under the device's row lock.
 *
 * A bundle that does not start where the verified chain ends is classified before verification:
 * - it starts later: records are missing, or bundles arrive out of order (`FLEET_GAP`);
 * - it starts earlier and every chunk and checkpoint it holds equals what the fleet stored: a
 *   repeat (`FLEET_REPLAYED`, with the fleet's cursor: an honest device whose acknowledgement was
 *   lost resumes there; nothing is stored or counted twice);
 * - it starts earlier and some chunk or checkpoint differs from the stored one: a second history
 *   of the device (`FLEET_FORK`, naming the first position that differs).
 * Then `src/verify` walks it; its failures become the fleet's codes (`FLEET_ROLLBACK` for the TPM
 * clock or reset count going back, `FLEET_FORGED` for a quote or nonce chain that does not verify,
 * `FLEET_LOG_MISMATCH` for records that do not replay to the quoted values: records hidden, added
 * or altered between checkpoints, `FLEET_WRONG_AK`).
 */
import type { KeyObject } from 'node:crypto';
import { bytesEqual } from '../base/bytes.js';
import { PolicyJudge, type RuntimePolicy } from '../policy/index.js';
import { decodeBundle, formatCursor, type EvidenceBundle, type EvidenceCursor } from '../serve/index.js';
import { chunkRecords, decodeCheckpoint, decodeChunk, encodeBootRecord, StoreError } from '../store/index.js';
import { publicKeyFromTpm2b } from '../tpm/index.js';
import { EvidenceVerifier, VerifyError, verifyStateFromJson, type BundleReport, type VerifyErrorCode, type VerifyState } from '../verify/index.js';
import { FleetError, type FleetErrorCode, type FleetErrorDetails } from './errors.js';
import type { DeviceRecord, DeviceTransaction, FailingRecord, Verdict } from './repository.js';

/** What an accepted bundle did. */
export interface AcceptedBundle {
  readonly report: BundleReport;
  /** The verifier state after it (where the verified log now ends). */
  readonly state: VerifyState;
  /** Records it added. */
  readonly records: number;
  readonly verdict: Verdict;
  readonly failures: readonly FailingRecord[];
}

const VERIFY_TO_FLEET: Readonly<Record<VerifyErrorCode, FleetErrorCode>> = {
  VERIFY_CHAIN_GAP: 'FLEET_GAP',
  VERIFY_SIGNATURE: 'FLEET_FORGED',
  VERIFY_NONCE_CHAIN: 'FLEET_FORGED',
  VERIFY_UNSIGNED: 'FLEET_FORGED',
  VERIFY_CLOCK_ORDER: 'FLEET_ROLLBACK',
  VERIFY_REPLAY: 'FLEET_LOG_MISMATCH',
  VERIFY_AK: 'FLEET_WRONG_AK',
  VERIFY_DEVICE_MISMATCH: 'FLEET_WRONG_AK',
  VERIFY_BUNDLE_CORRUPT: 'FLEET_BUNDLE_CORRUPT',
  VERIFY_TOKEN: 'FLEET_BUNDLE_CORRUPT',
};

/** Orders cursors: by boot, then index, then checkpoint. */
export function compareCursors(a: EvidenceCursor, b: EvidenceCursor): number {
  return a.boot - b.boot || a.index - b.index || a.checkpoint - b.checkpoint;
}

function refuse(code: FleetErrorCode, message: string, details: Partial<FleetErrorDetails>, cause?: unknown): FleetError {
  return new FleetError(code, message, details, cause === undefined ? undefined : { cause });
}

function decodeOrRefuse<T>(decode: () => T, what: string, where: Partial<FleetErrorDetails>): T {
  try {
    return decode();
  } catch (e) {
    if (e instanceof StoreError) throw refuse('FLEET_BUNDLE_CORRUPT', `${what}: ${e.message}`, { ...where, causeCode: e.code }, e);
    throw e;
  }
}

/** True when the bundle's AK (`TPM2B_PUBLIC`) is `key`. */
function sameKey(akPublic: Uint8Array | null, key: KeyObject): boolean {
  if (akPublic === null) return false;
  let got: Buffer;
  try {
    got = publicKeyFromTpm2b(akPublic).export({ type: 'spki', format: 'der' });
  } catch {
    return false;
  }
  return bytesEqual(got, key.export({ type: 'spki', format: 'der' }));
}

/**
 * The device's kept state, or undefined before its first bundle. A state the fleet wrote itself
 * that no longer reads is the database's fault, not the device's.
 */
function keptState(device: DeviceRecord): VerifyState | undefined {
  if (device.state === null) return undefined;
  try {
    return verifyStateFromJson(device.state);
  } catch (e) {
    throw refuse('FLEET_SCHEMA', `device ${device.id}: the stored verifier state does not read`, { deviceId: device.id, check: 'state' }, e);
  }
}

/** A bundle that starts before the verified chain's end: a repeat (REPLAYED) or another history (FORK). */
async function classifyEarlier(tx: DeviceTransaction, bundle: EvidenceBundle, end: EvidenceCursor): Promise<FleetError> {
  const deviceId = tx.device.id;
  const base = { deviceId, cursor: formatCursor(end), got: formatCursor(bundle.cursor) };
  for (const segment of bundle.segments) {
    for (const [i, value] of segment.chunks.entries()) {
      const chunk = decodeOrRefuse(() => decodeChunk(value, `chunk ${i} of boot ${segment.boot}`), 'chunk', { ...base, boot: segment.boot });
      const stored = await tx.chunk(segment.boot, chunk.firstIndex);
      const beyond = compareCursors({ boot: segment.boot, index: chunk.firstIndex, checkpoint: 0 }, end) >= 0;
      if (stored === undefined ? !beyond : !bytesEqual(stored, value)) {
        return refuse('FLEET_FORK', `device ${deviceId}: boot ${segment.boot} chunk ${chunk.firstIndex} differs from the evidence the fleet verified`, {
          ...base,
          check: 'fork-chunk',
          boot: segment.boot,
          index: chunk.firstIndex,
        });
      }
    }
    for (const value of segment.checkpoints) {
      const checkpoint = decodeOrRefuse(() => decodeCheckpoint(value, `checkpoint of boot ${segment.boot}`), 'checkpoint', { ...base, boot: segment.boot });
      const stored = await tx.checkpoint(segment.boot, checkpoint.count);
      const beyond = compareCursors({ boot: segment.boot, index: checkpoint.count, checkpoint: checkpoint.count }, end) >= 0;
      if (stored === undefined ? !beyond : !bytesEqual(stored, value)) {
        return refuse('FLEET_FORK', `device ${deviceId}: boot ${segment.boot} checkpoint ${checkpoint.count} differs from the evidence the fleet verified`, {
          ...base,
          check: 'fork-checkpoint',
          boot: segment.boot,
          checkpoint: checkpoint.count,
        });
      }
    }
  }
  return refuse('FLEET_REPLAYED', `device ${deviceId}: the bundle from ${base.got} repeats evidence the fleet holds; its verified evidence ends at ${base.cursor}`, {
    ...base,
    check: 'replayed',
  });
}

function asFleetError(e: unknown, deviceId: string, end: EvidenceCursor | undefined): unknown {
  if (!(e instanceof VerifyError)) return e;
  const d = e.details;
  const details: Partial<FleetErrorDetails> = {
    deviceId,
    check: d.check,
    ...(d.boot === undefined ? {} : { boot: d.boot }),
    ...(d.index === undefined ? {} : { index: d.index }),
    ...(d.checkpoint === undefined ? {} : { checkpoint: d.checkpoint }),
    ...(end === undefined ? {} : { cursor: formatCursor(end) }),
    causeCode: e.code,
  };
  return refuse(VERIFY_TO_FLEET[e.code], `device ${deviceId}: ${e.message}`, details, e);
}

/**
 * Verifies `bytes` from the device's kept state and writes evidence, boots and the new state into
 * `tx` (the caller adds verdict and acknowledgement, then commits). Throws {@link FleetError}.
 */
export async function acceptBundle(tx: DeviceTransaction, bytes: Uint8Array, policy: RuntimePolicy | undefined): Promise<AcceptedBundle> {
  const device = tx.device;
  const deviceId = device.id;
  if (device.enrollment !== 'approved' || device.akPublic === null) {
    throw refuse('FLEET_NOT_ENROLLED', `device ${deviceId} is ${device.enrollment}${device.akPublic === null ? ' without an AK' : ''}: its evidence is not accepted`, {
      deviceId,
      check: 'enrollment',
    });
  }
  const akPublic = device.akPublic;
  const trustedAk = decodeOrRefuse(
    () => {
      try {
        return publicKeyFromTpm2b(akPublic);
      } catch (e) {
        throw new StoreError('STORE_CORRUPT', `the enrolled AK does not parse: ${e instanceof Error ? e.message : String(e)}`, { key: 'devices.ak_public' }, { cause: e });
      }
    },
    'enrolled AK',
    { deviceId },
  );
  const state = keptState(device);
  const bundle = decodeOrRefuse(() => decodeBundle(bytes), 'bundle', { deviceId, check: 'bundle-decode' });
  // Before anything else is compared: evidence under another AK is not this device's, whatever it holds.
  if (!sameKey(bundle.akPublic, trustedAk)) {
    throw refuse('FLEET_WRONG_AK', `device ${deviceId}: the bundle is not under the AK the device enrolled`, { deviceId, check: 'ak-enrolled', got: formatCursor(bundle.cursor) });
  }
  const end = state?.cursor ?? { boot: bundle.cursor.boot, index: 0, checkpoint: 0 };
  const order = compareCursors(bundle.cursor, end);
  if (state === undefined && (bundle.cursor.index !== 0 || bundle.cursor.checkpoint !== 0)) {
    throw refuse('FLEET_GAP', `device ${deviceId}: its first bundle starts at ${formatCursor(bundle.cursor)}, not at a boot's start`, {
      deviceId,
      check: 'first-bundle',
      got: formatCursor(bundle.cursor),
      boot: bundle.cursor.boot,
      index: bundle.cursor.index,
    });
  }
  if (order < 0) throw await classifyEarlier(tx, bundle, end);
  if (order > 0) {
    throw refuse('FLEET_GAP', `device ${deviceId}: the bundle starts at ${formatCursor(bundle.cursor)}, its verified evidence ends at ${formatCursor(end)} (records missing or bundles out of order)`, {
      deviceId,
      check: 'bundle-cursor',
      cursor: formatCursor(end),
      got: formatCursor(bundle.cursor),
      boot: end.boot,
      index: end.index,
    });
  }
  const verifier = new EvidenceVerifier({ trustedAk, ...(state === undefined ? {} : { state }) });
  let report: BundleReport;
  try {
    report = verifier.verify(bytes);
  } catch (e) {
    throw asFleetError(e, deviceId, state?.cursor);
  }
  const after = verifier.state;
  if (after === undefined) throw refuse('FLEET_BUNDLE_CORRUPT', `device ${deviceId}: the bundle holds no boot segment`, { deviceId, check: 'empty' });
  const failures: FailingRecord[] = [];
  let records = 0;
  for (const segment of bundle.segments) {
    if ((await tx.boot(segment.boot)) === undefined) await tx.addBoot(segment.boot, encodeBootRecord({ ...segment.info, exported: null }));
    let judge: PolicyJudge | undefined;
    for (const value of segment.chunks) {
      const chunk = decodeChunk(value, `chunk of boot ${segment.boot}`);
      await tx.addChunk({ boot: segment.boot, firstIndex: chunk.firstIndex, count: chunk.count, value });
      records += chunk.count;
      if (policy === undefined) continue;
      // Chunks hold template data little-endian whatever the kernel's order (store schema); the
      // replay above already checked every template digest.
      judge ??= new PolicyJudge(policy, {
        from: chunk.firstIndex,
        checkTemplateHash: false,
        collect: false,
        onFinding: (f) => {
          if (f.reasons.length > 0) failures.push({ boot: segment.boot, index: f.index, path: f.path, reason: f.reasons.join(',') });
        },
      });
      for (const record of chunkRecords(chunk, `chunk ${chunk.firstIndex} of boot ${segment.boot}`)) judge.judge(record);
    }
    for (const value of segment.checkpoints) {
      await tx.addCheckpoint(segment.boot, decodeCheckpoint(value, `checkpoint of boot ${segment.boot}`).count, value);
    }
  }
  const verdict: Verdict = failures.length > 0 || device.verdict === 'fail' ? 'fail' : 'pass';
  return { report, state: after, records, verdict, failures };
}
