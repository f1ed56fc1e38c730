/**
 * `imakeep/testing`: dev-only. What imakeep's own tests, benches, examples and hardware harnesses
 * share, and a downstream project's tests may use: the crash-test seam of `imakeep run`. Nothing
 * in the daemon loads it; it is not part of the API an embedder builds on.
 */
export { crashHook, parseCrashAt } from './crash.js';
