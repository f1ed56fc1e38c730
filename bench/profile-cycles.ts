/**
 * Where the collector's cycle time goes: a `--cpu-prof` of the ingest child, only the samples
 * taken inside `runOnce` (the spans `bench/ingest.ts --cycle-spans` wrote), each charged to the
 * innermost frame of ours (`src/<module>`), or to V8's garbage collector, or to node with no frame
 * of ours (promise jobs, fs callbacks).
 *
 *   node --cpu-prof --cpu-prof-dir=/tmp/prof --cpu-prof-interval 200 --max-semi-space-size=1 \
 *     --max-old-space-size=32 dist/bench/ingest.js --child --flavor n --records 50000 \
 *     --sample-at 50000 --cycle-spans /tmp/prof/spans.json
 *   node dist/bench/profile-cycles.js /tmp/prof
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly children?: readonly number[];
}

/** The `.cpuprofile` JSON V8 writes (Profiler.Profile of the DevTools protocol). */
export interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly startTime: number;
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** Microseconds per class and per function, of the samples inside the spans. */
export interface CycleProfile {
  readonly totalUs: number;
  readonly byClass: ReadonlyMap<string, number>;
  /** The innermost frame of ours (`function file:line`). */
  readonly byFunction: ReadonlyMap<string, number>;
  /** The sampled function itself (`function file:line`), ours or node's. */
  readonly byLeaf: ReadonlyMap<string, number>;
}

const V8_STATES = new Set(['(garbage collector)', '(idle)', '(program)']);

/**
 * Charges each sample whose time falls in one of `spans` ([start, end] µs, the profile's clock) to
 * its class and function. A sample's time is `startTime` plus the deltas up to it.
 */
export function profileCycles(profile: CpuProfile, spans: readonly (readonly [number, number])[]): CycleProfile {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const byClass = new Map<string, number>();
  const byFunction = new Map<string, number>();
  const byLeaf = new Map<string, number>();
  const add = (m: Map<string, number>, k: string, us: number): void => {
    m.set(k, (m.get(k) ?? 0) + us);
  };
  let totalUs = 0;
  let time = profile.startTime;
  let span = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const delta = profile.timeDeltas[i] ?? 0;
    time += delta;
    while (span < spans.length && (spans[span]?.[1] ?? 0) < time) span++;
    const current = spans[span];
    if (current === undefined) break;
    if (time < current[0]) continue;
    const leaf = byId.get(profile.samples[i] ?? -1);
    if (leaf === undefined) continue;
    totalUs += delta;
    const leafName = leaf.callFrame.functionName;
    add(byLeaf, frameName(leaf.callFrame), delta);
    if (V8_STATES.has(leafName)) {
      add(byClass, leafName, delta);
      continue;
    }
    let kind = 'node (no frame of ours)';
    for (let id: number | undefined = leaf.id; id !== undefined; id = parent.get(id)) {
      const frame = byId.get(id)?.callFrame;
      const m = /dist\/((?:src|hw|bench)\/[a-z-]+|bench)[/.]/.exec(frame?.url ?? '');
      if (frame === undefined || m === null) continue;
      kind = m[1] ?? kind;
      add(byFunction, frameName(frame), delta);
      break;
    }
    add(byClass, kind, delta);
  }
  return { totalUs, byClass, byFunction, byLeaf };
}

function frameName(frame: ProfileNode['callFrame']): string {
  const where = frame.url === '' ? '' : ` ${frame.url.replace(/.*dist\//, '').replace(/^node:/, '')}:${frame.lineNumber + 1}`;
  return `${frame.functionName || '(anonymous)'}${where}`;
}

function main(): void {
  const dir = process.argv[2];
  if (dir === undefined) throw new Error('usage: node dist/bench/profile-cycles.js DIR (a .cpuprofile and spans.json)');
  const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  if (file === undefined) throw new Error(`no .cpuprofile in ${dir}`);
  const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile;
  const spans = JSON.parse(readFileSync(join(dir, 'spans.json'), 'utf8')) as [number, number][];
  const { totalUs, byClass, byFunction, byLeaf } = profileCycles(profile, spans);
  const top = (m: ReadonlyMap<string, number>, n: number): string =>
    [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, us]) => `${((100 * us) / totalUs).toFixed(1).padStart(5)} %  ${(us / 1000).toFixed(0).padStart(5)} ms  ${k}`).join('\n');
  process.stdout.write(`inside runOnce: ${(totalUs / 1000).toFixed(0)} ms sampled\n${top(byClass, 20)}\n--- by the innermost frame of ours\n${top(byFunction, 40)}\n--- by the sampled function\n${top(byLeaf, 40)}\n`);
}

if (process.argv[1] !== undefined && import.meta.url === new URL(`file://${process.argv[1]}`).href) main();
