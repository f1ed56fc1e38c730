/**
 * `imakeep/testing`: dev-only. What imakeep's own tests, benches, examples and hardware harnesses
 * share, and a downstream project's tests may use. Nothing in the daemon loads it (except
 * `imakeep run`'s crash seam, and only when `IMAKEEP_TEST_CRASH_AT` is set); it is not part of
 * the API an embedder builds on, and may change in any release.
 *
 * - the crash-test seam of `imakeep run`;
 * - seams into private parts that tests drive directly: the store's key layout (to damage a store
 *   on purpose), the ECDSA point arithmetic of signature checks (checked against node:crypto),
 *   the daemon's fleet sync and its backoff.
 */
export { crashHook, parseCrashAt } from './crash.js';
export { META_KEY, chunkKey } from '../store/keys.js';
export { addPoints, curveByName, multiply, nodePublicPoint } from '../policy/ecdsa.js';
export { backoffDelay, FleetSync, FRESH_PCR } from '../daemon/fleet-sync.js';
