import { GUEST_PATHS } from './initramfs.js';

/** securityfs folder of IMA (docs/kernel.md#files-in-securityfs; `/sys/kernel/security/ima` is a symlink to it). */
export const GUEST_IMA_DIR = '/sys/kernel/security/integrity/ima';

/** Lines the guest writes to mark progress (console) and the result stream (second serial port). */
export const GUEST_MARKERS = {
  /** Console: `IMAKEEP-STAGE <name> <guest uptime s>`. */
  stage: 'IMAKEEP-STAGE',
  /** Second serial port: base64 of `tar -cz` of /out between these two lines. */
  begin: 'IMAKEEP-RESULTS-BEGIN',
  end: 'IMAKEEP-RESULTS-END',
  /**
   * Second serial port: `IMAKEEP-EXCHANGE-BEGIN <step>`, base64 of a file, `IMAKEEP-EXCHANGE-END`;
   * the host answers with one line of base64 on the same port (a node step's `exchange`).
   */
  exchangeBegin: 'IMAKEEP-EXCHANGE-BEGIN',
  exchangeEnd: 'IMAKEEP-EXCHANGE-END',
} as const;

/** The guest's serial port to the host: results out, exchange answers in. */
export const GUEST_HOST_PORT = '/dev/ttyS1';

/**
 * A node command the guest runs, after the slab rounds and before the final capture; its stdout,
 * stderr and exit status land in `/out/node-<name>/` (files it writes under `/out` come back too).
 */
export interface GuestNodeStep {
  name: string;
  /**
   * Arguments after `node`. `pcrDir` holds `pcr-<bank>.txt` (evmctl format) read from sysfs right
   * before the run.
   */
  argv: (pcrDir: string) => string[];
  /**
   * Run the command once before, output discarded (default true): that run makes IMA measure every
   * module the command loads, so the real run adds no record and the log matches the PCRs read
   * in between. Turn off for commands with effects (a collector run).
   */
  warmUp?: boolean;
  /**
   * busybox sh commands run in the background while the command runs: a workload IMA measures
   * meanwhile. `$STEP_DIR` is the step's folder; `$STEP_DIR/done` appears when the command has
   * returned, and the guest waits for the workload to end before going on.
   */
  background?: string;
  /**
   * busybox sh commands run right after the command (and the background workload), e.g. a snapshot
   * of the kernel's list to compare with what the command read. Only busybox applets, which IMA
   * measured long before, and files under /out (tmpfs, not measured): so they add no record.
   */
  after?: string;
  /**
   * A round trip through the host, right after `after`: the guest sends the file `send` (written
   * by the command) and waits for the host's answer, which it writes to `receive`; the host
   * answers with `GuestRunOptions.exchange` (qemu.ts). Paths under /out.
   */
  exchange?: { readonly send: string; readonly receive: string };
}

/**
 * Default calibration folders: two rounds with short paths (`/w/r1/f123`, an 11-byte n-ng field)
 * to check repeatability, two with 56-character paths, near the ≈45-60 of real systems
 * (docs/ima-formats.md#sizes), and `/w/r1` again: its files get new contents, so each read adds a record
 * for an inode IMA already tracks, isolating the per-record cost from the per-inode state
 * (`iint_cache` and the file hash kept with it).
 */
export const DEFAULT_SLAB_ROUND_DIRS: readonly string[] = ['/w/r1', '/w/r2', `/w/r3-${'x'.repeat(40)}`, `/w/r4-${'x'.repeat(40)}`, '/w/r1'];

/** What the guest does after boot. */
export interface GuestPlan {
  /**
   * Slab calibration: one round per folder, each writing `filesPerRound` files in it (new files,
   * or new contents in a folder used before) and reading each once as root (one record per file). The folder name sets the path length, which
   * sets the size of the n-ng field (docs/ima-formats.md#sizes, docs/kernel.md#kernel-memory-per-record).
   */
  slabRoundDirs: readonly string[];
  filesPerRound: number;
  nodeSteps: readonly GuestNodeStep[];
}

const shellQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * The guest's `/init` (busybox ash). Order matters for the measurement list:
 * - results go to /out on tmpfs, which the tcb policy does not measure (`dont_measure
 *   fsmagic=TMPFS_MAGIC`), so saving and copying them out adds no record;
 * - the slab rounds run before node, with only busybox alive, to keep other allocations out of
 *   the before/after difference; each round's files are created first and read between the
 *   snapshots, so only the measurement (records + integrity inode cache) falls between them;
 * - the final PCR read comes last, around the copy of the log, and is done twice so the host can
 *   see that nothing was measured in between;
 * - the second serial port is opened once, raw and without echo, and held open (fd 3): a tty
 *   keeps what arrives only while it is open, and an echo would send the host's answers back;
 * - PID 1 never exits: a panic would reboot, QEMU would exit cleanly and swtpm would drop its
 *   PCRs (real-kernel/README.md); the host kills QEMU after the end marker.
 */
export function guestInitScript(plan: GuestPlan): string {
  const nodeSteps = plan.nodeSteps.map((step) => {
    const dir = `/out/node-${step.name}`;
    const cmd = [GUEST_PATHS.node, ...step.argv(`${dir}/pcrs`)].map(shellQuote).join(' ');
    const background = step.background === undefined ? [] : [`( ${step.background}\n) & workload=$!`];
    return [
      `mkdir -p ${dir}/pcrs; STEP_DIR=${dir}`,
      ...(step.warmUp === false ? [] : [`${cmd} >/dev/null 2>&1`]),
      `read_pcrs ${dir}/pcrs`,
      ...background,
      `${cmd} >${dir}/stdout 2>${dir}/stderr; echo $? >${dir}/status`,
      ...(step.background === undefined ? [] : [`touch ${dir}/done; wait $workload`]),
      ...(step.after === undefined ? [] : [step.after]),
      ...(step.exchange === undefined ? [] : [`exchange ${step.name} ${step.exchange.send} ${step.exchange.receive}`]),
      `stage node-${step.name}`,
    ].join('\n');
  });
  return `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /bin /sbin /usr/bin /usr/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/usr/bin:/bin:/usr/sbin:/sbin
mount -t sysfs sysfs /sys
mount -t securityfs securityfs /sys/kernel/security
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=256m tmpfs /out
IMA=${GUEST_IMA_DIR}
exec 3<>${GUEST_HOST_PORT}
stty -F ${GUEST_HOST_PORT} raw -echo
stage() { read up idle </proc/uptime; echo "$1 $up" >>/out/timings.txt; echo "${GUEST_MARKERS.stage} $1 $up"; }
read_pcrs() {
  for d in /sys/class/tpm/tpm0/pcr-*; do
    b=\${d##*/pcr-}; i=0
    while [ $i -lt 24 ]; do printf 'PCR-%02d: %s\\n' $i "$(tr A-F a-f <$d/$i)"; i=$((i+1)); done >$1/pcr-$b.txt
  done
}
exchange() {
  { echo "${GUEST_MARKERS.exchangeBegin} $1"; base64 <$2; echo ${GUEST_MARKERS.exchangeEnd}; } >&3
  read -r answer <&3
  printf '%s' "$answer" | base64 -d >$3
}
snapshot() {
  cat $IMA/runtime_measurements_count >$1.count
  cat /proc/slabinfo >$1.slabinfo
  cat /proc/meminfo >$1.meminfo
}
stage userspace
mkdir -p /out/probe /out/slab /out/log /out/pcrs-before /out/pcrs-after
stat -L -c '%a %n' $IMA/* >/out/probe/securityfs-modes.txt 2>&1
r=0
for d in ${plan.slabRoundDirs.map(shellQuote).join(' ')}; do
  r=$((r+1)); mkdir -p $d; i=0
  while [ $i -lt ${plan.filesPerRound} ]; do echo "$r.$i" >$d/f$i; i=$((i+1)); done
  snapshot /out/slab/$r.before
  cat $d/* >/dev/null
  snapshot /out/slab/$r.after
  stage slab-round-$r
done
${GUEST_PATHS.node} -e 0
stage node-first-start
${GUEST_PATHS.node} -e 0
stage node-second-start
cd ${GUEST_PATHS.app}
${nodeSteps.join('\n')}
read_pcrs /out/pcrs-before
cp $IMA/binary_runtime_measurements $IMA/ascii_runtime_measurements $IMA/runtime_measurements_count $IMA/violations /out/log/
read_pcrs /out/pcrs-after
snapshot /out/final
stage captured
dmesg >/out/dmesg.txt; uname -r >/out/uname.txt; cat /proc/cmdline >/out/cmdline.txt
{ echo ${GUEST_MARKERS.begin}; tar -cz -C /out . | base64; echo ${GUEST_MARKERS.end}; } >&3
stage sent
while :; do sleep 3600; done
`;
}
