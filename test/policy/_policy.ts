/** Shared helpers of the policy tests: capture records, policy documents, judging a run of records. */
import { parseBinaryList, type ImaRecord } from '../../src/ima/index.js';
import { loadRuntimePolicy, PolicyBuilder, PolicyJudge, type JudgeOptions, type RuntimePolicyDocument, type Verdict } from '../../src/policy/index.js';
import { loadCapture } from '../ima/_fixtures.js';

/** The records of a real-kernel capture's binary list. */
export function captureRecords(name: string): ImaRecord[] {
  return parseBinaryList(loadCapture(name).binary);
}

/** A policy document made from records, as `imakeep policy create` makes it. */
export function policyFrom(records: readonly ImaRecord[]): RuntimePolicyDocument {
  const builder = new PolicyBuilder();
  for (const rec of records) builder.add(rec);
  return builder.document();
}

/** An empty policy (Keylime's EMPTY_RUNTIME_POLICY) with `changes` applied at the top level. */
export function emptyPolicy(changes: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    meta: { version: 1, generator: 1 },
    release: 0,
    digests: {},
    excludes: [],
    keyrings: {},
    ima: { ignored_keyrings: [], log_hash_alg: 'sha1', dm_policy: null },
    'ima-buf': {},
    'verification-keys': '',
    ...changes,
  };
}

/** Judges `records` against a policy document (round-tripped through JSON text, as a file would be). */
export function judgeAll(doc: unknown, records: readonly ImaRecord[], options: JudgeOptions = {}): Verdict {
  const judge = new PolicyJudge(loadRuntimePolicy(JSON.parse(JSON.stringify(doc))), options);
  for (const rec of records) judge.judge(rec);
  return judge.verdict();
}

/** `index path reasons` of each failure, for exact comparisons. */
export function failureLines(v: Verdict): string[] {
  return v.failures.map((f) => `${f.index} ${f.path} ${f.reasons.join(',')}`);
}
