/**
 * Pure helpers of the demo and the benches: workload schedules and record supplies, /proc and
 * strace parsers, TPM frame splitting, the memory-pressure tables.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { computeTemplateDigest, splitTemplateData, toHex } from '../../src/ima/index.js';
import { benchWorkloads, demoWorkload, dueRecords, lastSecond, recordSupply, RUNAWAY_PATH, totalRecords } from '../../hw/workload.js';
import { parseProcStatTicks, parseProcStatus, parseSmaps, quantile, sampleProcess, sampleSmaps } from '../../hw/proc.js';
import { parseStraceSummary } from '../../hw/strace.js';
import { takeTpmFrame } from '../../hw/tpm-proxy.js';
import { heapUsedOf, issueTable, mallocEnvOption, pressureSettings, pressureTables, smapsTable, type PressureRun } from '../../bench/memory-pressure.js';
import { BENCH_MODULES, headlineOf, plotsOf, summaryTable } from '../../bench/_summary.js';

describe('workload schedules', () => {
  it('dueRecords: bursts arrive whole at their second, rates accrue whole records', () => {
    const phases = [
      { kind: 'burst', at: 0, records: 5000 },
      { kind: 'rate', from: 0, to: 10, perSecond: 20 },
      { kind: 'burst', at: 5, records: 2000 },
    ] as const;
    assert.equal(dueRecords(phases, 0), 5000);
    assert.equal(dueRecords(phases, 0.49), 5009);
    assert.equal(dueRecords(phases, 4.99), 5099);
    assert.equal(dueRecords(phases, 5), 7100);
    assert.equal(dueRecords(phases, 10), 7200);
    assert.equal(dueRecords(phases, 60), 7200, 'nothing after the last phase');
    assert.equal(lastSecond(phases), 10);
    assert.equal(totalRecords(phases), 7200);
  });

  it('the bench workloads: 5,000 at boot; 20/s; 1,000/s', () => {
    const [boot, steady, runaway] = benchWorkloads(30);
    assert.deepEqual([boot?.name, steady?.name, runaway?.name], ['boot', 'steady', 'runaway']);
    assert.equal(totalRecords(boot?.phases ?? []), 5000);
    assert.equal(totalRecords(steady?.phases ?? []), 600);
    assert.equal(totalRecords(runaway?.phases ?? []), 30_000);
    assert.equal(runaway?.records, 'runaway-log');
    assert.equal(totalRecords(demoWorkload(40).phases), 5000 + 800 + 2000);
  });
});

describe('record supplies', () => {
  const aggregate = new Uint8Array(32).fill(0xab);

  it('runaway-log: boot_aggregate first, then one path with a new digest every time', () => {
    const recs = recordSupply('runaway-log', aggregate).take(1001);
    const names = recs.map((r) => new TextDecoder().decode(splitTemplateData(r.template, r.data, 'le')?.[1] ?? new Uint8Array()));
    assert.equal(names[0], 'boot_aggregate\0');
    assert.deepEqual(new Set(names.slice(1)), new Set([`${RUNAWAY_PATH}\0`]));
    assert.equal(new Set(recs.map((r) => toHex(r.digest))).size, 1001, 'every template digest distinct: the kernel drops none as a duplicate');
    for (const r of recs.slice(0, 5)) assert.equal(toHex(r.digest), toHex(computeTemplateDigest(r, 'sha1', 'le')));
  });

  it('files: deterministic per seed, boot_aggregate carries the TPM value', () => {
    const a = recordSupply('files', aggregate, 3).take(50);
    const b = recordSupply('files', aggregate, 3).take(50);
    assert.deepEqual(a.map((r) => toHex(r.digest)), b.map((r) => toHex(r.digest)));
    const first = splitTemplateData(a[0]?.template ?? '', a[0]?.data ?? new Uint8Array(), 'le');
    assert.equal(toHex(first?.[0]?.subarray(-32) ?? new Uint8Array()), 'ab'.repeat(32));
  });
});

describe('/proc parsers', () => {
  it('status and io: key → number', () => {
    const status = parseProcStatus('Name:\tnode\nVmHWM:\t   81234 kB\nVmRSS:\t   70000 kB\nRssAnon:\t   30000 kB\nThreads:\t7\n');
    assert.equal(status.get('VmHWM'), 81234);
    assert.equal(status.get('VmRSS'), 70000);
    assert.equal(status.get('Threads'), 7);
    assert.equal(status.has('Name'), false);
    assert.equal(parseProcStatus('rchar: 10\nwrite_bytes: 4096\n').get('write_bytes'), 4096);
  });

  it('stat: utime + stime after a command name holding spaces and parentheses', () => {
    const fields = ['S', '1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '250', '50', '0', '0'];
    assert.equal(parseProcStatTicks(`1234 (we (ird) name) ${fields.join(' ')}`), 300);
  });

  it('sampleProcess reads this process, and nothing for a pid that does not exist', () => {
    const me = sampleProcess(process.pid);
    assert.ok(me !== undefined && me.rssKiB > 10_000 && me.peakRssKiB >= me.rssKiB && me.cpuSeconds > 0);
    assert.equal(sampleProcess(2 ** 22 + 1), undefined);
  });

  it('smaps: resident KiB summed by what is mapped; the written pages of file mappings counted apart', () => {
    const mapping = (header: string, rss: number, anonymous: number) => `${header}\nSize:  9999 kB\nRss:  ${rss} kB\nPss:  ${rss} kB\nAnonymous:  ${anonymous} kB\nVmFlags: rd wr\n`;
    const text = [
      mapping('00400000-02a00000 r-xp 00000000 08:01 123  /usr/bin/node', 30_000, 0),
      mapping('02a00000-02b00000 rw-p 02600000 08:01 123  /usr/bin/node', 300, 120),
      mapping('03000000-04000000 rw-p 00000000 00:00 0  [heap]', 5_000, 5_000),
      mapping('7f0000000000-7f0000400000 rw-p 00000000 00:00 0 ', 9_000, 9_000),
      mapping('7f0000400000-7f0000500000 r-xp 00000000 08:01 7  /usr/lib/x86_64-linux-gnu/libc.so.6', 1_300, 0),
      mapping('7f0000500000-7f0000600000 r-xp 00000000 08:01 8  /usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30', 1_400, 56),
      mapping('7f0000600000-7f0000700000 r-xp 00000000 08:01 9  /srv/app/node_modules/classic-level/prebuilds/linux-x64/classic-level.node', 200, 12),
      mapping('7f0000700000-7f0000800000 r--s 00000000 08:01 10 /var/lib/imakeep/000005.ldb', 64, 0),
      mapping('7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0  [stack]', 68, 68),
      mapping('7ffc00030000-7ffc00032000 r-xp 00000000 00:00 0  [vdso]', 4, 0),
    ].join('');
    assert.deepEqual(parseSmaps(text, '/usr/bin/node'), {
      brkHeapKiB: 5_000,
      anonMapsKiB: 9_000,
      stacksKiB: 68,
      nodeBinaryKiB: 30_180,
      addonsKiB: 188,
      librariesKiB: 2_644,
      otherFilesKiB: 68,
      fileAnonKiB: 188,
    });
    const me = sampleSmaps(process.pid);
    const status = sampleProcess(process.pid);
    assert.ok(me !== undefined && status !== undefined && me.nodeBinaryKiB > 10_000);
    // RssAnon of /proc/PID/status is the anonymous parts (the two reads are moments apart).
    const anon = me.brkHeapKiB + me.anonMapsKiB + me.stacksKiB + me.fileAnonKiB;
    assert.ok(Math.abs(anon - status.anonKiB) < 2048, `smaps ${anon} KiB against RssAnon ${status.anonKiB} KiB`);
    assert.equal(sampleSmaps(2 ** 22 + 1), undefined);
  });

  it('quantile: nearest rank', () => {
    const v = Array.from({ length: 100 }, (_, i) => 100 - i);
    assert.deepEqual([quantile(v, 0.5), quantile(v, 0.99), quantile(v, 1), quantile(v, 0)], [50, 99, 100, 1]);
    assert.ok(Number.isNaN(quantile([], 0.5)));
  });
});

describe('strace -c summary', () => {
  it('calls per syscall; blank errors column; total row skipped', () => {
    const text = [
      '% time     seconds  usecs/call     calls    errors syscall',
      '------ ----------- ----------- --------- --------- ----------------',
      ' 90.00    0.009000          45       200           fdatasync',
      ' 10.00    0.001000          50        20         1 fsync',
      '------ ----------- ----------- --------- --------- ----------------',
      '100.00    0.010000          45       220         1 total',
    ].join('\n');
    assert.deepEqual([...parseStraceSummary(text)], [['fdatasync', 200], ['fsync', 20]]);
  });
});

describe('TPM frames', () => {
  const frame = (size: number, fill: number) => {
    const b = new Uint8Array(size).fill(fill);
    new DataView(b.buffer).setUint32(2, size, false);
    return b;
  };

  it('splits on the header size; waits for the rest; rejects sizes below the header', () => {
    const two = new Uint8Array([...frame(12, 1), ...frame(10, 2)]);
    const first = takeTpmFrame(two);
    assert.equal(first?.frame.length, 12);
    assert.equal(first?.rest.length, 10);
    assert.equal(takeTpmFrame(first?.rest ?? new Uint8Array())?.frame[9], 2);
    assert.equal(takeTpmFrame(two.subarray(0, 11)), undefined);
    assert.equal(takeTpmFrame(two.subarray(0, 5)), undefined);
    assert.throws(() => takeTpmFrame(frame(10, 0).fill(0)), RangeError);
  });
});

describe('memory-pressure tables', () => {
  it('one row per run; not-yet runs say why; figures formatted', () => {
    const runs: PressureRun[] = [
      {
        workload: 'boot',
        mode: 'none',
        label: 'no collector',
        status: 'ok',
        samples: [],
        summary: { appendedRecords: 5000, appendedPerSecond: 5000, kernelRecordsPeak: 5000, kernelRecordsEnd: 5000, kmemPeakBytes: 2_125_824, kmemEndBytes: 2_125_824, rawRecordBytes: 118.2 },
      },
      { workload: 'boot', mode: 'n', label: 'imakeep, flavour n', status: 'not yet', reason: '`imakeep run` is not built', samples: [] },
    ];
    const table = pressureTables(runs, benchWorkloads(20));
    const lines = table.split('\n');
    assert.equal(lines[0], '**boot burst: 5,000 records at once, then nothing**');
    assert.equal(lines[4], '| no collector | 5,000 | 5,000 | 2,076 / 2,076 | — | — | — | — | — | — | — |');
    assert.equal(lines[5], '| imakeep, flavour n | not yet: `imakeep run` is not built | | | | | | | | | |');
    assert.equal(table.includes('steady'), false, 'no table for a workload without runs');
  });
});

describe("memory-pressure: issue 17's rows", () => {
  const collector = (peakRssMiB: number, peakAnonMiB: number, writeAmplification: number, cpuMsPerRecord: number) => ({
    peakRssKiB: peakRssMiB * 1024,
    endRssKiB: 60 * 1024,
    peakAnonKiB: peakAnonMiB * 1024,
    endAnonKiB: 18 * 1024,
    endFileKiB: 42 * 1024,
    endSmaps: { brkHeapKiB: 6144, anonMapsKiB: 12_288, stacksKiB: 68, nodeBinaryKiB: 38_912, addonsKiB: 460, librariesKiB: 3430, otherFilesKiB: 0, fileAnonKiB: 240 },
    cpuMsPerRecord,
    writeBytesPerRecord: 140,
    writeAmplification,
    exitCode: 0,
  });
  const summary = { appendedRecords: 5000, appendedPerSecond: 5000, kernelRecordsPeak: 5000, kernelRecordsEnd: 0, kmemPeakBytes: 2_125_824, kmemEndBytes: 8192, rawRecordBytes: 115 };
  const runs: PressureRun[] = [
    { workload: 'boot', mode: 'none', label: 'no collector', status: 'ok', samples: [], summary },
    { workload: 'boot', mode: 'n', label: 'imakeep, flavour n', status: 'ok', samples: [], summary: { ...summary, collector: collector(68.2, 25.2, 1.29, 0.192) } },
    { workload: 'steady', mode: 'staged', label: 'imakeep, staged', status: 'ok', samples: [], summary: { ...summary, collector: collector(61.5, 18.7, 2.5, 1.45) } },
    { workload: 'runaway', mode: 'n', label: 'imakeep, flavour n', status: 'failed', reason: 'collector exited | 1\nmore', samples: [] },
  ];
  const floor = {
    sample: { rssKiB: 57.8 * 1024, peakRssKiB: 58 * 1024, anonKiB: 16.2 * 1024, fileKiB: 41.6 * 1024, cpuSeconds: 0.3, writeBytes: 0, writtenChars: 0 },
    smaps: { brkHeapKiB: 4096, anonMapsKiB: 11_264, stacksKiB: 68, nodeBinaryKiB: 38_400, addonsKiB: 460, librariesKiB: 3430, otherFilesKiB: 0, fileAnonKiB: 240 },
  };

  it('one row per collector run, the goal met (✓) or not (✗) beside each figure, under the floor of the same run', () => {
    const lines = issueTable(runs, benchWorkloads(20), floor).split('\n');
    assert.ok(lines[0]?.endsWith('RSS 57.8 MiB = RssAnon 16.2 + RssFile 41.6 MiB.'), lines[0]);
    assert.deepEqual(lines.slice(4, 7), [
      '| boot | n | 68.2 ✗ | 25.2 / 18.0 ✗ | 1.29 ✓ | 192.0 |',
      '| steady | staged | 61.5 ✓ | 18.7 / 18.0 ✓ | 2.50 ✗ | 1,450.0 |',
      '| runaway | n | failed: collector exited / 1 | | | |',
    ]);
    assert.match(issueTable([], benchWorkloads(20), undefined), /floor in this run .*: not measured\./);
  });

  it('smaps rows in MiB: the floor first, then each run that has them', () => {
    const lines = smapsTable(runs, floor).split('\n');
    assert.deepEqual(lines.slice(4, 7), [
      "| Node's floor | — | 4.00 | 11.00 | 0.07 | 0.23 | 37.50 | 3.35 | 0.45 | 0.00 |",
      '| boot | n | 6.00 | 12.00 | 0.07 | 0.23 | 38.00 | 3.35 | 0.45 | 0.00 |',
      '| steady | staged | 6.00 | 12.00 | 0.07 | 0.23 | 38.00 | 3.35 | 0.45 | 0.00 |',
    ]);
    assert.equal(lines[7], '');
  });

  it('--node-flags and --malloc-env replace the daemon settings; malformed pairs are refused', () => {
    const settings = pressureSettings(['--node-flags=--max-semi-space-size=1  --optimize-for-size', '--malloc-env=MALLOC_ARENA_MAX=1 MALLOC_TOP_PAD_=0', '--no-strace'], {});
    assert.deepEqual(settings.nodeFlags, ['--max-semi-space-size=1', '--optimize-for-size']);
    assert.deepEqual(settings.mallocEnv, { MALLOC_ARENA_MAX: '1', MALLOC_TOP_PAD_: '0' });
    assert.equal(pressureSettings(['--no-strace'], {}).nodeFlags, undefined);
    assert.deepEqual(mallocEnvOption(''), {});
    assert.throws(() => mallocEnvOption('LD_PRELOAD=/x.so'), /MALLOC_NAME=value pairs, not 'LD_PRELOAD=\/x.so'/);
    assert.throws(() => mallocEnvOption('MALLOC_ARENA_MAX='), RangeError);
  });
});

describe('daemon heap from /v1/status', () => {
  it('reads collector.process.heapUsedBytes in KiB; other shapes give nothing', () => {
    assert.equal(heapUsedOf({ collector: { process: { heapUsedBytes: 8 * 1024 * 1024 } } }), 8192);
    assert.equal(heapUsedOf({ collector: { process: { heapUsedBytes: '8' } } }), undefined);
    assert.equal(heapUsedOf({ collector: {} }), undefined);
    assert.equal(heapUsedOf(null), undefined);
  });
});

describe('bench summary', () => {
  it('headline figures from each module JSON shape; unknown shapes give nothing', () => {
    assert.deepEqual(headlineOf('replay', { oursOverEvmctl: 1.8421 }), { 'ours ÷ evmctl (records/s)': '1.84' });
    assert.deepEqual(headlineOf('tpm', { speedupMedian: { pcrRead: 228.46, quoteEcc: 70.8 } }), {
      'pcrRead speedup vs tpm2-tools': '228.5',
      'quote speedup vs tpm2-tools': '70.8',
    });
    assert.deepEqual(
      headlineOf('memory-pressure', {
        runs: [
          { workload: 'boot', mode: 'staged', status: 'ok', summary: { kmemEndBytes: 8192 } },
          { workload: 'boot', mode: 'n', status: 'not yet' },
        ],
      }),
      { 'boot/staged kernel KiB at end': '8', 'boot/n kernel KiB at end': 'not yet' },
    );
    assert.deepEqual(headlineOf('ingest', { runs: [{ flavor: 'n', recordsPerSecond: 47172.4, writeAmplification: 2.987 }] }), {
      'flavour n records/s': '47,172',
      'flavour n write amplification': '2.99',
    });
    assert.deepEqual(
      headlineOf('serve', {
        cases: [
          { server: 'imakeep', format: 'binary', from: 0, mbPerS: 105.44 },
          { server: 'imakeep', format: 'binary', from: 100, mbPerS: 1 },
        ],
        keylimeOverImakeepPeakMemoryFromZero: 20.9,
      }),
      { 'imakeep binary MB/s': '105.4', 'Keylime-style ÷ imakeep peak memory': '20.9' },
    );
    assert.deepEqual(headlineOf('replay', 'not json'), {});
    assert.deepEqual(headlineOf('store', { x: 1 }), {});
  });

  it('plots listed by a JSON; the summary table has one row per module, errors inline', () => {
    assert.deepEqual(plotsOf({ plots: ['a.svg', 3, 'b.svg'] }), ['a.svg', 'b.svg']);
    assert.deepEqual(plotsOf(null), []);
    const table = summaryTable([
      { name: 'tpm', what: '', status: 'ok', exitCode: 0, seconds: 2.6, command: '', headline: { 'quote speedup': '70.8' }, plots: [], stdout: '' },
      { name: 'ingest', what: '', status: 'missing', exitCode: null, seconds: 0, command: '', error: 'not yet: a | b', headline: {}, plots: [], stdout: '' },
    ]);
    assert.deepEqual(table.split('\n'), [
      '| bench | status | seconds | figures / error |',
      '|---|---|---:|---|',
      '| tpm | ok | 3 | quote speedup: 70.8 |',
      '| ingest | missing | 0 | not yet: a / b |',
    ]);
    assert.deepEqual(BENCH_MODULES.map((m) => m.name), ['memory-pressure', 'ingest', 'serve', 'replay', 'tpm', 'store']);
  });
});
