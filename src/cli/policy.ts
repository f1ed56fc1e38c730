/**
 * `imakeep policy`: Keylime runtime policies.
 *
 *   imakeep policy check LOG --policy FILE [--json] [--format binary|ascii] [--in-bank B]
 *                            [--endian le|be] [--from N] [--violations accept|reject]
 *   imakeep policy create LOG [--out FILE] [--format ...] [--ignored-keyring NAME ...]
 *
 * `check` judges every record of LOG (a kernel-format list, `-` for stdin) from record N on, as
 * Keylime's verifier would, streaming: memory stays one chunk and one record. Text: one line per
 * failing record and per violation, then a summary; `--json`: one object
 * `{"findings": [...], "ok": ..., "summary": {...}}`, the findings written as they are found.
 * Exit 0 when every record passes, 1 when one fails or on an error, 2 on a usage error.
 * `create` writes a Keylime-format policy from a known-good LOG.
 *
 * `judgeBundleFiles` is `imakeep verify --policy`: it judges the records of bundles that
 * `imakeep verify` has verified.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { UsageError } from '../errors.js';
import { recordBatches } from '../ima/index.js';
import { judgeList, parseRuntimePolicy, PolicyBuilder, PolicyJudge, formatRuntimePolicy, type Finding, type RuntimePolicy, type Verdict, type VerdictSummary, type ViolationTreatment } from '../policy/index.js';
import { chunkRecords, decodeBundle, decodeChunk } from '../store/index.js';
import { LIST_INPUT_OPTIONS, listStreamOptions, openListInput } from './_ima-input.js';
import { choiceOption, integerOption, parseVerbArgs, requireOptions, writeStdout, type CliVerb } from './_verb.js';

/** Usage of `imakeep policy`. */
export const usage = `usage: imakeep policy check LOG --policy FILE [--json] [--format binary|ascii] [--in-bank B] [--endian le|be]
                           [--from N] [--violations accept|reject]
       imakeep policy create LOG [--out FILE] [--format binary|ascii] [--in-bank B] [--endian le|be] [--ignored-keyring NAME ...]
LOG may be - (stdin). check: exit 0 when every record passes the Keylime runtime policy, 1 when one fails.
--from N judges records N.. of LOG; --violations: how all-zero (ToMToU, open-writers) records count (default accept, as Keylime).`;

/** The policy file, parsed and validated (its errors are `POLICY_*`, exit 1). */
async function readPolicy(file: string): Promise<RuntimePolicy> {
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (e) {
    throw new UsageError(`cannot read --policy ${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
  return parseRuntimePolicy(bytes);
}

/** One text line of a finding. */
function findingLine(f: Finding, treatment: ViolationTreatment): string {
  const head = f.reasons.length > 0 ? `FAIL ${f.index}` : `VIOLATION ${f.index}`;
  const why = f.reasons.length > 0 ? f.reasons.join(',') : `violation (${treatment}ed)`;
  return `${head} ${f.template} ${f.path || '-'} ${f.digest || '-'} ${why}\n`;
}

function summaryLine(s: VerdictSummary, prefix = ''): string {
  const reasons = Object.entries(s.reasons).map(([r, n]) => `${r} ${n}`).join(', ');
  return (
    `${prefix}${s.failed === 0 ? 'OK' : 'FAILED'}: records ${s.from}..${s.from + s.records - 1}: ${s.passed} passed, ${s.failed} failed` +
    `${reasons === '' ? '' : ` (${reasons})`}; ${s.excluded} excluded, ${s.signaturesVerified} by signature, ` +
    `${s.violations} violations (${s.violationTreatment}ed), ${s.keyringsIgnored} ignored keyring measurements\n`
  );
}

/** Writes findings as they come: text lines, or the elements of the JSON `findings` array. */
class FindingWriter {
  readonly #json: boolean;
  readonly #treatment: ViolationTreatment;
  #pending: string[] = [];
  #count = 0;

  constructor(json: boolean, treatment: ViolationTreatment) {
    this.#json = json;
    this.#treatment = treatment;
  }

  add(f: Finding): void {
    this.#pending.push(this.#json ? `${this.#count === 0 ? '' : ','}\n${JSON.stringify(f)}` : findingLine(f, this.#treatment));
    this.#count++;
  }

  /** Writes what is pending (called once per chunk, so memory stays one chunk's findings). */
  async flush(): Promise<void> {
    if (this.#pending.length === 0) return;
    const text = this.#pending.join('');
    this.#pending = [];
    await writeStdout(text);
  }
}

/** Async chunks passed on after `each` ran, so findings are flushed once per chunk. */
async function* tapped(chunks: AsyncIterable<Uint8Array>, each: () => Promise<void>): AsyncGenerator<Uint8Array> {
  for await (const chunk of chunks) {
    yield chunk;
    await each();
  }
}

async function check(argv: string[]): Promise<number> {
  const { values, positionals } = parseVerbArgs(argv, {
    ...LIST_INPUT_OPTIONS,
    policy: { type: 'string' },
    json: { type: 'boolean' },
    from: { type: 'string' },
    violations: { type: 'string' },
  });
  const log = positionals[0];
  if (log === undefined || positionals.length > 1) throw new UsageError('give exactly one LOG (- for stdin)');
  const { policy: policyFile } = requireOptions(values, ['policy']);
  const listOptions = listStreamOptions(values);
  const from = integerOption('from', values.from, 0) ?? 0;
  const treatment = choiceOption('violations', values.violations ?? 'accept', ['accept', 'reject'] as const);
  const json = values.json === true;
  const policy = await readPolicy(policyFile);
  const writer = new FindingWriter(json, treatment);
  const judge = new PolicyJudge(policy, { from, violations: treatment, endian: listOptions.endian, collect: false, onFinding: (f) => writer.add(f) });
  const input = await openListInput(log);
  if (json) await writeStdout('{"findings": [');
  await judgeList(tapped(input, () => writer.flush()), judge, { ...listOptions, skip: from });
  await writer.flush();
  const { ok, summary } = judge.verdict();
  await writeStdout(json ? `\n], "ok": ${ok}, "summary": ${JSON.stringify(summary)}}\n` : summaryLine(summary));
  return ok ? 0 : 1;
}

async function create(argv: string[]): Promise<number> {
  const { values, positionals } = parseVerbArgs(argv, {
    ...LIST_INPUT_OPTIONS,
    out: { type: 'string' },
    'ignored-keyring': { type: 'string', multiple: true },
  });
  const log = positionals[0];
  if (log === undefined || positionals.length > 1) throw new UsageError('give exactly one LOG (- for stdin)');
  const listOptions = listStreamOptions(values);
  const builder = new PolicyBuilder({ timestamp: new Date().toISOString(), ignoredKeyrings: values['ignored-keyring'] ?? [], endian: listOptions.endian });
  for await (const batch of recordBatches(await openListInput(log), listOptions)) for (const rec of batch) builder.add(rec);
  const text = `${formatRuntimePolicy(builder.document())}\n`;
  if (values.out === undefined) await writeStdout(text);
  else await writeFile(values.out, text);
  return 0;
}

const policy: CliVerb = async (argv) => {
  const [sub, ...rest] = argv;
  if (sub === 'check') return check(rest);
  if (sub === 'create') return create(rest);
  throw new UsageError(sub === undefined ? 'give check or create' : `unknown subcommand '${sub}' (check, create)`);
};

export default policy;

/**
 * `imakeep verify --policy FILE`: judges the records of bundle files that `imakeep verify` has
 * just verified (so their template digests are not checked again), one judge per boot carried
 * across the files, as the records follow each other. Text: findings and one summary per boot;
 * JSON: one more line `{"policy": {"ok": ..., "boots": [{"boot": B, "verdict": {...}}]}}`.
 * Returns the exit status: 0 when every record passes.
 */
export async function judgeBundleFiles(paths: readonly string[], policyFile: string, json: boolean): Promise<number> {
  const policy = await readPolicy(policyFile);
  const judges = new Map<number, PolicyJudge>();
  for (const path of paths) {
    const bundle = decodeBundle(new Uint8Array(await readFile(path)));
    for (const segment of bundle.segments) {
      segment.chunks.forEach((bytes, i) => {
        const key = `chunk ${i} of boot ${segment.boot}`;
        const chunk = decodeChunk(bytes, key);
        let judge = judges.get(segment.boot);
        if (judge === undefined) {
          judge = new PolicyJudge(policy, { from: chunk.firstIndex, checkTemplateHash: false });
          judges.set(segment.boot, judge);
        }
        for (const rec of chunkRecords(chunk, key)) judge.judge(rec);
      });
    }
  }
  const boots: { boot: number; verdict: Verdict }[] = [...judges].map(([boot, judge]) => ({ boot, verdict: judge.verdict() }));
  const ok = boots.every((b) => b.verdict.ok);
  if (json) {
    await writeStdout(`${JSON.stringify({ policy: { ok, boots } })}\n`);
  } else {
    const lines = boots.flatMap(({ boot, verdict }) => [
      ...[...verdict.failures, ...verdict.violations.filter((v) => v.reasons.length === 0)].sort((a, b) => a.index - b.index).map((f) => `boot ${boot} ${findingLine(f, verdict.summary.violationTreatment)}`),
      summaryLine(verdict.summary, `policy boot ${boot} `),
    ]);
    await writeStdout(lines.length === 0 ? 'policy: no records in the bundles\n' : lines.join(''));
  }
  return ok ? 0 : 1;
}
