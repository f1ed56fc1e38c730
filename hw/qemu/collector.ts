/**
 * imakeep's collector in the guest, against the real securityfs and the real TPM (`/dev/tpmrm0`):
 * the node steps that run it while a workload measures files, then serve its log and export an
 * evidence bundle; and the reading of what those steps sent back. The host's checks of the served
 * log and the bundle are in verify.ts; test/qemu/boot.test.ts asserts on them.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GuestOutputError } from './errors.js';
import { GUEST_IMA_DIR, type GuestNodeStep } from './guest-init.js';
import { GUEST_PATHS } from './initramfs.js';

/** Where the guest keeps the collector's store: on the /out tmpfs, which IMA does not measure. */
export const GUEST_STORE_DIR = '/out/store';
/**
 * The guest's device id (it has no /etc/machine-id): the collector's store adopts it and the
 * guest's enrollment names it (enroll.ts), so `verify --enrollment` holds the bundle to it.
 */
export const GUEST_DEVICE_ID = 'imakeep-qemu-guest';
/** The evidence bundle `imakeep export` writes in the guest. */
export const GUEST_BUNDLE = '/out/bundle.cbor';
/** Folder of the files the background workload writes and reads (on the measured rootfs). */
export const WORKLOAD_DIR = '/w/live';
/** The collector steps' names (each comes back as `/out/node-<name>/`). */
const STEP = { during: 'collect-during-workload', afterWorkload: 'collect-after-workload', export: 'export', log: 'log', logAscii: 'log-ascii' } as const;
/** Names of the collector steps, in the order they run. */
export const COLLECTOR_STEP_NAMES: readonly string[] = [STEP.during, STEP.afterWorkload, STEP.export, STEP.log, STEP.logAscii];

/**
 * Byte budget of the one exported bundle: above the whole store (≈ 130 B per record, a few MiB),
 * so one bundle from the start carries every chunk and checkpoint (the default is 1 MiB).
 */
const BUNDLE_MAX_BYTES = 64 * 2 ** 20;

/** Files per workload batch: written, then read by one `cat` (one exec, one record per file). */
export const WORKLOAD_BATCH_FILES = 25;
/**
 * Upper bound on batches, so the workload ends even if the collector hangs; at one batch per
 * 0.1 s it outlasts a collector run (≈10-20 s under TCG) many times over.
 */
const WORKLOAD_MAX_BATCHES = 1200;

/**
 * The workload run in the background of the first collector run: batches of new files under
 * {@link WORKLOAD_DIR}, each read once as root (one record per file, docs/ima-formats.md#sizes), until the
 * collector has returned (`$STEP_DIR/done`). Writes the number of batches to `workload-batches`.
 */
function workloadScript(): string {
  return [
    `mkdir -p ${WORKLOAD_DIR}; b=0`,
    `while [ ! -e $STEP_DIR/done ] && [ $b -lt ${WORKLOAD_MAX_BATCHES} ]; do`,
    `  i=0; while [ $i -lt ${WORKLOAD_BATCH_FILES} ]; do echo "$b.$i" >${WORKLOAD_DIR}/f$b-$i; i=$((i+1)); done`,
    `  cat ${WORKLOAD_DIR}/f$b-* >/dev/null; b=$((b+1)); usleep 100000`,
    'done',
    'echo $b >$STEP_DIR/workload-batches',
  ].join('\n');
}

/**
 * Shell that records size and SHA-256 of a kernel list as read right now (a copy on /out, then
 * deleted: only its figures come back), to compare with what a command served just before.
 */
function snapshotList(list: string, name: string): string {
  return `cp ${GUEST_IMA_DIR}/${list} $STEP_DIR/${name}; ${digestAndDrop(name)}`;
}

/** Shell that replaces `$STEP_DIR/<name>` by its size and SHA-256 (`<name>.bytes`, `<name>.sha256`). */
function digestAndDrop(name: string): string {
  return `wc -c <$STEP_DIR/${name} >$STEP_DIR/${name}.bytes; sha256sum <$STEP_DIR/${name} >$STEP_DIR/${name}.sha256; rm $STEP_DIR/${name}`;
}

/**
 * The collector steps, after the harness's probe and replay steps:
 * 1. `imakeep run --once --flavor none` against `/sys/kernel/security` and `/dev/tpmrm0` while the
 *    workload measures files (records arrive during the drain, the quote and the match);
 * 2. the same once more after the workload stopped (stores the rest, a second checkpoint);
 * 3. `imakeep export` of the whole store to {@link GUEST_BUNDLE}, as one bundle;
 * 4. `imakeep log` (binary SHA-1 list), warmed up so its own modules are measured before the
 *    checked run, with the kernel's list snapshotted right after;
 * 5. `imakeep log --format ascii`, likewise; its output comes back as size and SHA-256 only (the
 *    host compares them with the kernel's ASCII list, which it has), to keep the results small;
 *    then the store is deleted (its statuses were copied).
 * Each collector run's `imakeep-status.json` is copied to its step folder.
 */
export function collectorNodeSteps(): GuestNodeStep[] {
  const cli = `${GUEST_PATHS.app}/dist/src/cli.js`;
  const collect = ['run', '--once', '--flavor', 'none', '--tpm', 'device:/dev/tpmrm0', '--securityfs', '/sys/kernel/security', '--store', GUEST_STORE_DIR, '--device-id', GUEST_DEVICE_ID];
  const keepStatus = `cp ${GUEST_STORE_DIR}/imakeep-status.json $STEP_DIR/collector-status.json; cat ${GUEST_IMA_DIR}/runtime_measurements_count >$STEP_DIR/kernel-count`;
  const log = ['log', '--store', GUEST_STORE_DIR, '--securityfs', '/sys/kernel/security'];
  return [
    { name: STEP.during, warmUp: false, argv: () => [cli, ...collect], background: workloadScript(), after: keepStatus },
    { name: STEP.afterWorkload, warmUp: false, argv: () => [cli, ...collect], after: keepStatus },
    { name: STEP.export, warmUp: false, argv: () => [cli, 'export', '--store', GUEST_STORE_DIR, '--out', GUEST_BUNDLE, '--max-bytes', String(BUNDLE_MAX_BYTES)] },
    { name: STEP.log, argv: () => [cli, ...log], after: snapshotList('binary_runtime_measurements', 'kernel-binary') },
    {
      name: STEP.logAscii,
      warmUp: false,
      argv: () => [cli, ...log, '--format', 'ascii'],
      // `stdout` stays, emptied: the harness expects the file.
      after: `${snapshotList('ascii_runtime_measurements', 'kernel-ascii')}; cp $STEP_DIR/stdout $STEP_DIR/served; : >$STEP_DIR/stdout; ${digestAndDrop('served')}; rm -rf ${GUEST_STORE_DIR}`,
    },
  ];
}

/** The fields of the collector's status file the checks use. */
export interface CollectorStatusSummary {
  flavor: string;
  flavorReason: string;
  /** T: records removed from the kernel. */
  removed: number;
  /** Records 0..stored-1 are in committed chunks. */
  stored: number;
  /** Records covered by the last checkpoint (a quote matched by replay), or null. */
  checkpoint: number | null;
  /** Records the guest's kernel counted right after the run. */
  kernelCountAfter: number;
}

/** A kernel list as read right after a serving command: size and SHA-256 (hex). */
export interface ListSnapshot {
  bytes: number;
  sha256: string;
}

/** What the collector steps sent back. */
export interface CollectorGuestResults {
  runs: { duringWorkload: CollectorStatusSummary; afterWorkload: CollectorStatusSummary };
  /** Workload batches written while the first collector run ran. */
  workloadBatches: number;
  workloadFiles: number;
  /** `imakeep export` stdout: `<next cursor> <full|caught-up>`. */
  exportLine: string;
  bundle: string;
  /** `imakeep log` output (binary SHA-1 list) and the kernel's list read right after it. */
  servedBinary: string;
  kernelBinaryAtServe: ListSnapshot;
  /** `imakeep log --format ascii` output (size and SHA-256) and the kernel's ASCII list read right after it. */
  servedAscii: ListSnapshot;
  kernelAsciiAtServe: ListSnapshot;
  /** The guest's PCRs read right before the checked `imakeep log` run (`pcr-<bank>.txt`). */
  pcrFilesAtServe: Record<string, string>;
}

function file(dir: string, rel: string): string {
  const path = join(dir, rel);
  if (!existsSync(path)) throw new GuestOutputError(path, 'missing from the guest results');
  return path;
}

function integer(path: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw new GuestOutputError(path, `has ${String(value)} where an integer belongs`);
  return value;
}

function field(path: string, value: unknown, name: string): unknown {
  const entry = typeof value === 'object' && value !== null ? Object.entries(value).find(([key]) => key === name) : undefined;
  if (entry === undefined) throw new GuestOutputError(path, `has no '${name}'`);
  return entry[1];
}

function statusSummary(stepDir: string): CollectorStatusSummary {
  const path = file(stepDir, 'collector-status.json');
  const json: unknown = JSON.parse(readFileSync(path, 'utf8'));
  const last = field(path, json, 'lastCheckpoint');
  return {
    flavor: String(field(path, json, 'flavor')),
    flavorReason: String(field(path, json, 'flavorReason')),
    removed: integer(path, field(path, json, 'removed')),
    stored: integer(path, field(path, json, 'stored')),
    checkpoint: last === null ? null : integer(path, field(path, last, 'count')),
    kernelCountAfter: integer(path, Number(readFileSync(file(stepDir, 'kernel-count'), 'utf8').trim())),
  };
}

function listSnapshot(stepDir: string, name: string): ListSnapshot {
  const sha256 = /^[0-9a-f]{64}/.exec(readFileSync(file(stepDir, `${name}.sha256`), 'utf8'))?.[0];
  if (sha256 === undefined) throw new GuestOutputError(join(stepDir, `${name}.sha256`), 'holds no SHA-256');
  return { bytes: integer(join(stepDir, `${name}.bytes`), Number(readFileSync(file(stepDir, `${name}.bytes`), 'utf8').trim())), sha256 };
}

/** Reads what {@link collectorNodeSteps} left in the unpacked guest results `guestDir`. */
export function loadCollectorResults(guestDir: string): CollectorGuestResults {
  const stepDir = (name: string): string => join(guestDir, `node-${name}`);
  const during = stepDir(STEP.during);
  const logDir = stepDir(STEP.log);
  const workloadBatches = integer(join(during, 'workload-batches'), Number(readFileSync(file(during, 'workload-batches'), 'utf8').trim()));
  const pcrFilesAtServe: Record<string, string> = {};
  for (const bank of ['sha1', 'sha256']) pcrFilesAtServe[bank] = file(logDir, `pcrs/pcr-${bank}.txt`);
  return {
    runs: { duringWorkload: statusSummary(during), afterWorkload: statusSummary(stepDir(STEP.afterWorkload)) },
    workloadBatches,
    workloadFiles: workloadBatches * WORKLOAD_BATCH_FILES,
    exportLine: readFileSync(file(stepDir(STEP.export), 'stdout'), 'utf8').trim(),
    bundle: file(guestDir, GUEST_BUNDLE.replace(/^\/out\//, '')),
    servedBinary: file(logDir, 'stdout'),
    kernelBinaryAtServe: listSnapshot(logDir, 'kernel-binary'),
    servedAscii: listSnapshot(stepDir(STEP.logAscii), 'served'),
    kernelAsciiAtServe: listSnapshot(stepDir(STEP.logAscii), 'kernel-ascii'),
    pcrFilesAtServe,
  };
}

/**
 * Indexes (0-based line numbers) of the records of an ASCII list (`PCR hash template digest path`,
 * docs/ima-formats.md#binary-record) whose file path lies under `dir`. Pure.
 */
export function recordIndexesUnder(asciiList: string, dir: string): number[] {
  const prefix = `${dir.replace(/\/$/, '')}/`;
  const indexes: number[] = [];
  asciiList.split('\n').forEach((line, i) => {
    const path = line.split(' ')[4];
    if (path?.startsWith(prefix) === true) indexes.push(i);
  });
  return indexes;
}
