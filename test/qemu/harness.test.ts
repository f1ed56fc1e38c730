// Unit tests of the QEMU harness's pure parts and its cpio writer (checked by GNU cpio itself).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { COLLECTOR_STEP_NAMES, collectorNodeSteps, recordIndexesUnder } from '../../hw/qemu/collector.js';
import { encodeCpioEntry, encodeCpioTrailer, type CpioEntry } from '../../hw/qemu/cpio.js';
import { DEFAULT_SLAB_ROUND_DIRS, guestInitScript, GUEST_MARKERS } from '../../hw/qemu/guest-init.js';
import { parseLddOutput, productionPackages } from '../../hw/qemu/initramfs.js';
import { missingKernelOptions, parseKernelConfig } from '../../hw/qemu/kernel.js';
import { flavoursFromModes, parseStatModes, probedRemoval } from '../../hw/qemu/probe.js';
import { extractExchange, extractResults, qemuArgs } from '../../hw/qemu/qemu.js';
import { calibrateSlab, parseMeminfo, parseSlabinfo } from '../../hw/qemu/slab.js';
import { formatEvmctlPcrs, parseEvmctlPcrs, parsePcrRead } from '../../hw/qemu/swtpm.js';

const fixtures = join(import.meta.dirname, '..', '..', '..', 'test', 'fixtures', 'real-kernel');

test('cpio newc archive unpacks with GNU cpio to the same tree', () => {
  const dir = mkdtempSync(join(tmpdir(), 'imakeep-cpio-'));
  try {
    const members: CpioEntry[] = [
      { kind: 'dir', path: 'bin' },
      { kind: 'file', path: 'bin/tool', data: new TextEncoder().encode('#!/bin/sh\necho hi\n'), mode: 0o755 },
      { kind: 'file', path: 'odd', data: new Uint8Array([1, 2, 3]) },
      { kind: 'symlink', path: 'bin/link', target: 'tool' },
    ];
    const chunks = [...members.flatMap((m, i) => encodeCpioEntry(m, i + 1)), encodeCpioTrailer()];
    writeFileSync(join(dir, 'a.cpio'), Buffer.concat(chunks));
    const r = spawnSync('cpio', ['-idm', '--quiet', '-F', 'a.cpio'], { cwd: dir, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(readFileSync(join(dir, 'bin/tool'), 'utf8'), '#!/bin/sh\necho hi\n');
    assert.equal(statSync(join(dir, 'bin/tool')).mode & 0o777, 0o755);
    assert.deepEqual([...readFileSync(join(dir, 'odd'))], [1, 2, 3]);
    assert.equal(statSync(join(dir, 'odd')).mode & 0o777, 0o644);
    assert.equal(readlinkSync(join(dir, 'bin/link')), 'tool');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('cpio headers: 110 ASCII bytes, name padded to 4, device numbers in the rdev fields', () => {
  const [head] = encodeCpioEntry({ kind: 'chardev', path: 'dev/console', major: 5, minor: 1 }, 7);
  assert.ok(head !== undefined);
  const text = new TextDecoder().decode(head);
  assert.equal(text.slice(0, 6), '070701');
  assert.equal(text.slice(6, 14), '00000007'); // ino
  assert.equal(text.slice(14, 22), '00002180'); // S_IFCHR | 0600
  assert.equal(text.slice(78, 86), '00000005'); // rdevmajor
  assert.equal(text.slice(86, 94), '00000001'); // rdevminor
  assert.equal(text.slice(94, 102), '0000000c'); // "dev/console\0"
  assert.equal(head.length % 4, 0);
  assert.equal(new TextDecoder().decode(encodeCpioTrailer()).slice(110, 120), 'TRAILER!!!');
});

const SLABINFO = (kmalloc64: number, kmalloc192: number, iint: number): string =>
  [
    'slabinfo - version: 2.1',
    '# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>',
    `kmalloc-64         ${kmalloc64}  ${kmalloc64}     64   64    1 : tunables    0    0    0 : slabdata  ${kmalloc64 / 64}  ${kmalloc64 / 64}      0`,
    `kmalloc-192        ${kmalloc192}  ${kmalloc192}    192   21    1 : tunables    0    0    0 : slabdata  ${kmalloc192 / 21}  ${kmalloc192 / 21}      0`,
    `iint_cache         ${iint}  ${iint}    128   32    1 : tunables    0    0    0 : slabdata  ${iint / 32}  ${iint / 32}      0`,
  ].join('\n');

test('slabinfo and meminfo parse; calibration divides the differences by the records added', () => {
  const caches = parseSlabinfo(SLABINFO(6400, 2100, 3200));
  assert.deepEqual(caches.get('kmalloc-192'), { name: 'kmalloc-192', activeObjs: 2100, numObjs: 2100, objSize: 192, pagesPerSlab: 1, numSlabs: 100 });
  const meminfo = parseMeminfo('MemTotal:        1000000 kB\nSlab:              20000 kB\nSUnreclaim:        10000 kB\nHugePages_Total:       0\n');
  assert.equal(meminfo.get('Slab'), 20000);
  assert.equal(meminfo.get('HugePages_Total'), 0);
  const cal = calibrateSlab(
    { caches, meminfoKb: meminfo, records: 100 },
    {
      caches: parseSlabinfo(SLABINFO(6400 + 4 * 1000 * 64 / 64, 2100 + 1050, 3200 + 1024)),
      meminfoKb: new Map([['Slab', 20000 + 600], ['SUnreclaim', 10000 + 500]]),
      records: 1100,
    },
  );
  assert.equal(cal.records, 1000);
  assert.equal(cal.kmallocObjectBytesPerRecord, (4000 * 64 + 1050 * 192) / 1000);
  assert.equal(cal.kmallocSlabBytesPerRecord, ((4000 / 64) * 4096 + (1050 / 21) * 4096) / 1000);
  assert.equal(cal.allCachesObjectBytesPerRecord, (4000 * 64 + 1050 * 192 + 1024 * 128) / 1000);
  assert.equal(cal.meminfoSlabBytesPerRecord, (600 * 1024) / 1000);
  assert.equal(cal.meminfoSUnreclaimBytesPerRecord, (500 * 1024) / 1000);
  assert.deepEqual(cal.topCaches.map((c) => [c.name, c.objects]), [['kmalloc-64', 4000], ['kmalloc-192', 1050], ['iint_cache', 1024]]);
});

test('removal flavours from securityfs modes: 6.1 → none; 7.2 with staging → staged, n, none', () => {
  const linux61 = parseStatModes('440 /sys/kernel/security/integrity/ima/binary_runtime_measurements\n440 /sys/kernel/security/integrity/ima/runtime_measurements_count\n');
  assert.equal(linux61.get('binary_runtime_measurements'), 0o440);
  assert.deepEqual(flavoursFromModes(linux61), ['none']);
  const linux72 = parseStatModes(
    ['660 /x/binary_runtime_measurements', '660 /x/binary_runtime_measurements_sha1', '660 /x/binary_runtime_measurements_sha1_staged', '440 /x/violations'].join('\n'),
  );
  assert.deepEqual(flavoursFromModes(linux72), ['staged', 'n', 'none']);
  assert.deepEqual(flavoursFromModes(parseStatModes('660 /x/binary_runtime_measurements_sha1\n')), ['n', 'none']);
  assert.equal(probedRemoval('{"removal":"none","flavours":[]}'), 'none');
  assert.equal(probedRemoval('imakeep: KERNEL_ENOENT: no IMA directory'), null);
});

test('ldd output, production packages and kernel config are read as written', () => {
  const ldd = '\tlinux-vdso.so.1 (0x00007ffd)\n\tlibstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n';
  assert.deepEqual(parseLddOutput(ldd), ['/lib/x86_64-linux-gnu/libstdc++.so.6', '/lib64/ld-linux-x86-64.so.2']);
  const lock = JSON.stringify({ packages: { '': {}, 'node_modules/level': {}, 'node_modules/typescript': { dev: true }, 'node_modules/cbor-extract': { optional: true } } });
  assert.deepEqual(productionPackages(lock), ['node_modules/level', 'node_modules/cbor-extract']);
  const config = parseKernelConfig('CONFIG_SECURITYFS=y\nCONFIG_IMA=y\n# CONFIG_IMA_STAGING is not set\nCONFIG_TCG_TPM=y\nCONFIG_TCG_TIS=m\nCONFIG_X="a=b"\n');
  assert.equal(config.get('CONFIG_X'), '"a=b"');
  assert.equal(config.has('CONFIG_IMA_STAGING'), false);
  assert.deepEqual(missingKernelOptions(config), ['CONFIG_TCG_TIS']);
});

test('PCR formats: tpm2_pcrread YAML and evmctl PCR-NN lines', () => {
  const yaml = '  sha1:\n    0 : 0x3A3F780F11A4B49969FCAA80CD6E3957C33B2275\n    10: 0x0000000000000000000000000000000000000001\n  sha256:\n    10: 0xAB\n';
  const banks = parsePcrRead(yaml);
  assert.deepEqual(banks, { sha1: { 0: '3a3f780f11a4b49969fcaa80cd6e3957c33b2275', 10: '0000000000000000000000000000000000000001' }, sha256: { 10: 'ab' } });
  const fixture = readFileSync(join(fixtures, 'short-ima-ng', 'pcr-sha1.txt'), 'utf8');
  const parsed = parseEvmctlPcrs(fixture);
  assert.equal(Object.keys(parsed).length, 24);
  assert.equal(formatEvmctlPcrs(parsed), fixture);
});

test('results are cut between the markers, and only once the end marker arrived', () => {
  const serial = `noise\r\n${GUEST_MARKERS.begin}\r\nQUJD\r\nREVG\r\n${GUEST_MARKERS.end}\r\n`;
  assert.equal(Buffer.from(extractResults(serial) ?? '', 'base64').toString('utf8'), 'ABCDEF');
  assert.equal(extractResults(`${GUEST_MARKERS.begin}\nQUJD\n`), null);
});

test('an exchange request is cut between its markers, named by its step, once complete', () => {
  const serial = `noise\r\n${GUEST_MARKERS.exchangeBegin} enroll-request\nQUJD\nREVG\n${GUEST_MARKERS.exchangeEnd}\nmore`;
  const r = extractExchange(serial, 0);
  assert.ok(r !== null);
  assert.deepEqual([r.step, Buffer.from(r.sent).toString('utf8'), serial.slice(r.end)], ['enroll-request', 'ABCDEF', '\nmore']);
  assert.equal(extractExchange(serial, r.end), null);
  assert.equal(extractExchange(`${GUEST_MARKERS.exchangeBegin} x\nQUJD\n`, 0), null);
});

test("a node step's exchange sends its file to the host and writes the answer, on the port held open raw", () => {
  const script = guestInitScript({
    slabRoundDirs: ['/w/a'],
    filesPerRound: 1,
    nodeSteps: [{ name: 'ask', warmUp: false, argv: () => ['x.js'], after: 'true', exchange: { send: '/out/q', receive: '/out/a' } }],
  });
  const r = spawnSync('sh', ['-n'], { input: script, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const order = ['exec 3<>/dev/ttyS1', 'stty -F /dev/ttyS1 raw -echo', "'/usr/bin/node' 'x.js' >/out/node-ask/stdout", 'true\nexchange ask /out/q /out/a', 'stage node-ask', `${GUEST_MARKERS.begin}; tar`];
  const positions = order.map((s) => script.indexOf(s));
  assert.ok(positions.every((p) => p > 0), String(positions));
  assert.deepEqual([...positions].sort((a, b) => a - b), positions);
});

test('the guest /init is valid sh and runs every round and node step in order', () => {
  const script = guestInitScript({
    slabRoundDirs: DEFAULT_SLAB_ROUND_DIRS,
    filesPerRound: 5000,
    nodeSteps: [{ name: 'replay', argv: (pcrDir) => ['/app/dist/src/cli.js', 'replay', 'LOG', '--expect', `${pcrDir}/pcr-sha1.txt`] }],
  });
  const r = spawnSync('sh', ['-n'], { input: script, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(script, /for d in '\/w\/r1' '\/w\/r2' '\/w\/r3-x{40}' '\/w\/r4-x{40}' '\/w\/r1'; do/);
  assert.match(script, /'\/usr\/bin\/node' '\/app\/dist\/src\/cli.js' 'replay' 'LOG' '--expect' '\/out\/node-replay\/pcrs\/pcr-sha1.txt' >\/out\/node-replay\/stdout/);
  const replayRuns = script.split("'/usr/bin/node' '/app/dist/src/cli.js' 'replay'").length - 1;
  assert.equal(replayRuns, 2, 'a warm-up run, then the checked run');
  const once = guestInitScript({ slabRoundDirs: ['/w/a'], filesPerRound: 1, nodeSteps: [{ name: 'run', warmUp: false, argv: () => ['x.js'] }] });
  assert.equal(once.split("'/usr/bin/node' 'x.js'").length - 1, 1);
  const order = ['stage userspace', 'slab-round-', 'node-first-start', 'node-replay', 'read_pcrs /out/pcrs-before', 'cp $IMA/binary_runtime_measurements', 'read_pcrs /out/pcrs-after', GUEST_MARKERS.begin];
  const positions = order.map((s) => script.indexOf(s));
  assert.ok(positions.every((p) => p > 0), String(positions));
  assert.deepEqual([...positions].sort((a, b) => a - b), positions);
});

test('a node step\'s background workload runs during the command and is waited for; its after-commands follow', () => {
  const script = guestInitScript({
    slabRoundDirs: ['/w/a'],
    filesPerRound: 1,
    nodeSteps: [{ name: 'collect', warmUp: false, argv: () => ['x.js'], background: 'while [ ! -e $STEP_DIR/done ]; do cat /w/a/f0; done', after: 'cp /x $STEP_DIR/y' }],
  });
  const r = spawnSync('sh', ['-n'], { input: script, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const order = ['STEP_DIR=/out/node-collect', 'read_pcrs /out/node-collect/pcrs', '( while [ ! -e $STEP_DIR/done ]', ') & workload=$!', "'/usr/bin/node' 'x.js'", 'touch /out/node-collect/done; wait $workload', 'cp /x $STEP_DIR/y', 'stage node-collect'];
  const positions = order.map((s) => script.indexOf(s));
  assert.ok(positions.every((p) => p > 0), String(positions));
  assert.deepEqual([...positions].sort((a, b) => a - b), positions);
});

test('the collector steps run imakeep against the real securityfs and TPM, flavour none, store on the /out tmpfs', () => {
  const steps = collectorNodeSteps();
  assert.deepEqual(steps.map((s) => s.name), [...COLLECTOR_STEP_NAMES]);
  const script = guestInitScript({ slabRoundDirs: ['/w/a'], filesPerRound: 1, nodeSteps: steps });
  const r = spawnSync('sh', ['-n'], { input: script, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const collect = "'/usr/bin/node' '/app/dist/src/cli.js' 'run' '--once' '--flavor' 'none' '--tpm' 'device:/dev/tpmrm0' '--securityfs' '/sys/kernel/security' '--store' '/out/store'";
  assert.equal(script.split(collect).length - 1, 2, 'two collector runs, no warm-up');
  assert.equal(script.split("'/app/dist/src/cli.js' 'log' '--store' '/out/store' '--securityfs' '/sys/kernel/security' >").length - 1, 2, 'log: a warm-up run, then the checked run');
  assert.match(script, /'export' '--store' '\/out\/store' '--out' '\/out\/bundle.cbor' '--max-bytes' '67108864'/);
  assert.ok(script.indexOf('rm -rf /out/store') > script.indexOf("'log' '--store' '/out/store' '--securityfs' '/sys/kernel/security' '--format' 'ascii'"));
  // Only the first collector run has the workload running alongside.
  assert.equal(script.split(') & workload=$!').length - 1, 1);
  assert.ok(script.indexOf(') & workload=$!') < script.indexOf(collect));
});

test('records are found under a folder by the path field of the ASCII list', () => {
  const line = (path: string): string => `10 ${'a'.repeat(40)} ima-ng sha256:${'b'.repeat(64)} ${path}`;
  const ascii = [line('boot_aggregate'), line('/w/live/f0-0'), line('/w/lively'), line('/w/live/f0-1'), ''].join('\n');
  assert.deepEqual(recordIndexesUnder(ascii, '/w/live'), [1, 3]);
  assert.deepEqual(recordIndexesUnder(ascii, '/w/live/'), [1, 3]);
  assert.deepEqual(recordIndexesUnder(ascii, '/nowhere'), []);
});

test('QEMU gets TCG, a TIS TPM on the swtpm control socket and two serial ports', () => {
  const args = qemuArgs({ vmlinuz: 'K', initramfs: 'I', cmdline: 'C', swtpmStateDir: '/s', resultsPath: '/r', memoryMiB: 1024, timeoutSeconds: 1 }).join(' ');
  assert.match(args, /-machine q35,accel=tcg -cpu max/);
  assert.match(args, /-chardev socket,id=chrtpm,path=\/s\/ctrl.sock -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-tis,tpmdev=tpm0/);
  assert.match(args, /-chardev pipe,id=chrhost,path=\/r.pipe -serial stdio -serial chardev:chrhost/);
  assert.match(args, /-no-reboot/);
});
