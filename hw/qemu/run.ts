import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { unpackResults, loadGuestResults, type GuestResults } from './capture.js';
import { buildInitramfs, GUEST_PATHS } from './initramfs.js';
import { DEFAULT_SLAB_ROUND_DIRS, guestInitScript, GUEST_IMA_DIR, type GuestNodeStep, type GuestPlan } from './guest-init.js';
import { resolveGuestKernel } from './kernel.js';
import { guestProbeProgram, KERNEL_PROBE_MODULE } from './probe.js';
import { bootGuest, DEFAULT_KERNEL_CMDLINE, type BootOutcome, type GuestStage } from './qemu.js';
import { pcrreadSwtpm, setupSwtpmState, startSwtpmForQemu, storeVolatileState, withStoredSwtpm, type PcrBanks } from './swtpm.js';
import { builtReplayCli, evmctlCheck, imakeepConvertChecks, imakeepReplayCheck, recreateAkPem, replayArgs, writePcrFiles, type FormatCheck, type LogCheck } from './verify.js';

/**
 * Where Debian kernel packages are cached between runs: `/var/cache/imakeep-qemu` for root (CI),
 * else the project's git-ignored `.tmp/qemu-cache`.
 */
export function defaultKernelCache(projectRoot: string): string {
  return process.getuid?.() === 0 ? '/var/cache/imakeep-qemu' : join(projectRoot, '.tmp', 'qemu-cache');
}

/** Options of {@link runImaGuest}. */
export interface GuestRunOptions {
  /** Project checkout with a current build (`dist/src`) and `node_modules`. */
  projectRoot: string;
  /** Scratch folder for this run (swtpm state, initramfs, results); the caller removes it. */
  workDir: string;
  /** Debian kernel package name or bzImage path; default: what `linux-image-amd64` depends on. */
  kernel?: string;
  /** Kernel package cache (default {@link defaultKernelCache}). */
  cacheDir?: string;
  /** Slab calibration folders, one round each (default {@link DEFAULT_SLAB_ROUND_DIRS}). */
  slabRoundDirs?: readonly string[];
  /** New files (= records) per round (default 5000). */
  filesPerRound?: number;
  /**
   * More node commands for the guest, run after the built-in probe and replay steps (e.g. the
   * collector with flavour `none`, then `serve`); their outputs are in `report.guest.nodeSteps`.
   */
  extraNodeSteps?: readonly GuestNodeStep[];
  /** Kernel command line (default {@link DEFAULT_KERNEL_CMDLINE}). */
  cmdline?: string;
  /** Guest RAM (default 1024 MiB: node and the 106 MiB initramfs fit with room to spare). */
  memoryMiB?: number;
  /** Limit from QEMU start to the results' end marker (default 600 s). */
  timeoutSeconds?: number;
  /** Called as each guest stage line arrives (progress output). */
  onStage?: (stage: GuestStage) => void;
  /** Answers the node steps' exchanges with the host (`GuestNodeStep.exchange`), during the boot. */
  exchange?: (step: string, sent: Uint8Array) => Promise<Uint8Array>;
  /**
   * Runs against the guest's TPM after the VM stopped (swtpm on the stored state, `port` its TCP
   * data port), e.g. reading what the guest's TPM holds with tpm2-tools.
   */
  withHostTpm?: (port: number) => Promise<void>;
}

/** Everything a run measured and checked. */
export interface GuestRunReport {
  kernel: { debianPackage: string | null; release: string; vmlinuz: string; imaStaging: string };
  initramfs: { bytes: number; members: number; seconds: number };
  /** Host seconds from QEMU start to each guest stage (`userspace`, `slab-round-N`, ...). */
  stages: GuestStage[];
  /** Host seconds from QEMU start to the results' end marker. */
  bootSeconds: number;
  guest: GuestResults;
  hostPcrs: PcrBanks;
  /** `hostPcrs` as `pcr-<bank>.txt` files (evmctl format). */
  hostPcrFiles: Record<string, string>;
  /** The AK recreated from the stopped guest's TPM state (SPKI PEM path), when the CLI is built. */
  hostAkPem: string | null;
  checks: LogCheck[];
  /** `imakeep convert` of the fetched binary list vs the kernel's ASCII and binary lists (when built). */
  formatChecks: FormatCheck[];
}

/**
 * Boots the guest kernel with IMA and a fresh swtpm, runs the guest plan, fetches the results,
 * reads the PCRs again from the host, and verifies the fetched log against both PCR sets with
 * evmctl and (when built) `imakeep replay`. swtpm and QEMU are stopped on every path.
 */
export async function runImaGuest(options: GuestRunOptions): Promise<GuestRunReport> {
  const kernel = await resolveGuestKernel(options.kernel, options.cacheDir ?? defaultKernelCache(options.projectRoot));
  const cli = builtReplayCli(options.projectRoot);
  const nodeSteps: GuestNodeStep[] = [];
  if (existsSync(join(options.projectRoot, KERNEL_PROBE_MODULE))) {
    nodeSteps.push({ name: 'probe', argv: () => guestProbeProgram(`${GUEST_PATHS.app}/${KERNEL_PROBE_MODULE}`) });
  }
  if (cli !== null) {
    const guestCli = `${GUEST_PATHS.app}/dist/src/cli.js`;
    nodeSteps.push({
      name: 'replay',
      argv: (pcrDir) => [guestCli, ...replayArgs(`${GUEST_IMA_DIR}/binary_runtime_measurements`, { sha1: `${pcrDir}/pcr-sha1.txt`, sha256: `${pcrDir}/pcr-sha256.txt` })],
    });
  }
  nodeSteps.push(...(options.extraNodeSteps ?? []));
  const plan: GuestPlan = { slabRoundDirs: options.slabRoundDirs ?? DEFAULT_SLAB_ROUND_DIRS, filesPerRound: options.filesPerRound ?? 5000, nodeSteps };

  const t0 = performance.now();
  const initramfs = await buildInitramfs({
    projectRoot: options.projectRoot,
    initScript: guestInitScript(plan),
    outPath: join(options.workDir, 'initramfs.cpio'),
  });
  const initramfsSeconds = (performance.now() - t0) / 1000;

  const stateDir = join(options.workDir, 'swtpm');
  mkdirSync(stateDir, { recursive: true });
  await setupSwtpmState(stateDir);
  const swtpm = await startSwtpmForQemu(stateDir);
  let boot: BootOutcome;
  try {
    boot = await bootGuest({
      vmlinuz: kernel.vmlinuz,
      initramfs: initramfs.path,
      cmdline: options.cmdline ?? DEFAULT_KERNEL_CMDLINE,
      swtpmStateDir: stateDir,
      resultsPath: join(options.workDir, 'serial1.txt'),
      memoryMiB: options.memoryMiB ?? 1024,
      timeoutSeconds: options.timeoutSeconds ?? 600,
      ...(options.onStage === undefined ? {} : { onStage: options.onStage }),
      ...(options.exchange === undefined ? {} : { exchange: options.exchange }),
    });
    await storeVolatileState(stateDir);
  } finally {
    await swtpm.stop();
  }
  const { hostPcrs, hostAkPem } = await withStoredSwtpm(stateDir, async (port) => {
    const read = { hostPcrs: await pcrreadSwtpm(port), hostAkPem: cli === null ? null : await recreateAkPem(cli, port, join(options.workDir, 'host-ak')) };
    await options.withHostTpm?.(port);
    return read;
  });

  const resultsDir = join(options.workDir, 'guest');
  await unpackResults(boot.resultsBase64, resultsDir);
  const guest = loadGuestResults(resultsDir, plan.slabRoundDirs.length, nodeSteps.map((s) => s.name));
  const hostPcrFiles = writePcrFiles(hostPcrs, join(options.workDir, 'host-pcrs'));
  const checks: LogCheck[] = [
    await evmctlCheck('guest', guest.binaryLog, guest.pcrFilesBefore),
    await evmctlCheck('host', guest.binaryLog, hostPcrFiles),
  ];
  if (cli !== null) {
    checks.push(await imakeepReplayCheck(cli, 'guest', guest.binaryLog, guest.pcrFilesBefore));
    checks.push(await imakeepReplayCheck(cli, 'host', guest.binaryLog, hostPcrFiles));
  }
  const formatChecks = cli === null ? [] : await imakeepConvertChecks(cli, guest.binaryLog, guest.asciiLog);
  return {
    kernel: {
      debianPackage: kernel.debianPackage,
      release: kernel.release,
      vmlinuz: kernel.vmlinuz,
      imaStaging: kernel.configPath === null ? 'unknown (no config)' : (kernel.config.get('CONFIG_IMA_STAGING') ?? 'not set'),
    },
    initramfs: { bytes: initramfs.bytes, members: initramfs.members, seconds: initramfsSeconds },
    stages: boot.stages,
    bootSeconds: boot.hostSeconds,
    guest,
    hostPcrs,
    hostPcrFiles,
    hostAkPem,
    checks,
    formatChecks,
  };
}
