/**
 * TPM latency: imakeep's client (one persistent connection) against tpm2-tools (one process per
 * call, the way scripts and some agents drive a TPM), on the same private swtpm in one run.
 *
 *   npx tsc -p . && node dist/bench/tpm.js [--quick]
 *
 * Writes bench/results/tpm.json (medians, p90, ratios, the machine). swtpm serves one data
 * connection at a time, so our connection is closed before each tpm2-tools phase.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startSwtpm } from '../hw/swtpm.js';
import { describeMachine } from './_machine.js';
import { Quote, Tpm, TpmQuoter, encodePcrBlob, publicKeyFromTpm2b, verifyQuote } from '../src/tpm/index.js';
import { selectionOf } from '../src/testing/index.js';

const run = promisify(execFile);
const quick = process.argv.includes('--quick');

/** Median and p90 of samples in ms. */
interface Stats {
  readonly n: number;
  readonly medianMs: number;
  readonly p90Ms: number;
}

function stats(samples: number[]): Stats {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number): number => Number((s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN).toFixed(4));
  return { n: s.length, medianMs: at(0.5), p90Ms: at(0.9) };
}

async function time(n: number, warmup: number, fn: () => Promise<unknown>): Promise<Stats> {
  for (let i = 0; i < warmup; i++) await fn();
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn();
    samples.push(performance.now() - t0);
  }
  return stats(samples);
}

const swtpm = await startSwtpm();
const work = mkdtempSync(join(tmpdir(), 'imakeep-bench-tpm-'));
const tpm = Tpm.open(swtpm.address);
const env = { ...process.env, TPM2TOOLS_TCTI: swtpm.tcti };
const tools = (cmd: string, args: string[]): Promise<unknown> => run(cmd, args, { env, cwd: work });
const N = quick ? { ours: 50, tools: 5 } : { ours: 500, tools: 30 };

try {
  const pcr10 = [{ bank: 'sha256', pcr: 10 }] as const;
  const nonce = new Uint8Array(32).fill(7);
  const ours: Record<string, Stats> = {};
  ours.pcrRead = await time(N.ours, 20, () => tpm.pcrRead(pcr10));
  const ecc = await tpm.createAk({ alg: 'ecc' });
  const rsa = await tpm.createAk({ alg: 'rsa' });
  ours.quoteCommandEcc = await time(N.ours, 10, () =>
    tpm.execute(Quote, { signHandle: ecc.handle, qualifyingData: nonce, selections: selectionOf(pcr10) }),
  );
  ours.quoteAndPcrReadEcc = await time(N.ours, 10, () => tpm.quote({ nonce, pcrs: pcr10, ak: ecc }));
  ours.quoteAndPcrReadRsa = await time(Math.ceil(N.ours / 5), 5, () => tpm.quote({ nonce, pcrs: pcr10, ak: rsa }));
  const q = await tpm.quote({ nonce, pcrs: pcr10, ak: ecc });
  const akKey = publicKeyFromTpm2b(ecc.public);
  ours.verifyEcc = await time(N.ours, 20, async () => verifyQuote({ attest: q.attest, signature: q.signature, akPublic: akKey, nonce, pcrs: q.pcrs }));
  ours.createPrimaryEccAndFlush = await time(Math.ceil(N.ours / 10), 2, async () => tpm.flush((await tpm.createAk({ alg: 'ecc' })).handle));
  await tpm.flush(ecc.handle);
  await tpm.flush(rsa.handle);
  // What the daemon pays per quote: its quoter creates the AK (a primary) and flushes it around
  // each quote. Keylime mode adds PCR 16's reset and extend before, and its PCR_Read after.
  for (const alg of ['ecc', 'rsa'] as const) {
    const quoter = new TpmQuoter(tpm, { alg, releaseAfterUse: false });
    ours[`quoterQuote${alg === 'ecc' ? 'Ecc' : 'Rsa'}`] = await time(Math.ceil(N.ours / 10), 3, () => quoter.quote(nonce, pcr10));
  }
  const keylime = new TpmQuoter(tpm, { alg: 'rsa', releaseAfterUse: false });
  const binding = { sha256: new Uint8Array(32).fill(16) };
  const withPcr16 = [...pcr10, { bank: 'sha256', pcr: 16 }] as const;
  ours.keylimeQuoteRsa = await time(Math.ceil(N.ours / 10), 3, async () => {
    await keylime.resetAndExtend(16, binding);
    await keylime.quote(nonce, withPcr16);
    await keylime.readPcrs([{ bank: 'sha256', pcr: 16 }]);
  });
  writeFileSync(join(work, 'ak.pem'), akKey.export({ type: 'spki', format: 'pem' }));
  writeFileSync(join(work, 'attest.bin'), q.attest);
  writeFileSync(join(work, 'sig.bin'), q.signature);
  writeFileSync(join(work, 'pcrs.bin'), encodePcrBlob(q.pcrs));
  await tpm.close();

  const theirs: Record<string, Stats> = {};
  theirs.pcrRead = await time(N.tools, 2, () => tools('tpm2_pcrread', ['sha256:10']));
  await tools('tpm2_createprimary', ['-C', 'e', '-g', 'sha256', '-G', 'ecc256:ecdsa-sha256:null',
    '-a', 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign|noda', '-c', 'ak.ctx']);
  await tools('tpm2_flushcontext', ['-t']);
  // tpm2_quote loads the AK context, leaving a transient object: flush after every quote (docs/tpm.md#swtpm).
  theirs.quoteEcc = await time(N.tools, 2, async () => {
    await tools('tpm2_quote', ['-c', 'ak.ctx', '-l', 'sha256:10', '-q', '07'.repeat(32), '-m', 'q.msg', '-s', 'q.sig', '-o', 'q.pcrs', '-g', 'sha256']);
    await tools('tpm2_flushcontext', ['-t']);
  });
  theirs.verifyEcc = await time(N.tools, 2, () =>
    tools('tpm2_checkquote', ['-u', 'ak.pem', '-m', 'attest.bin', '-s', 'sig.bin', '-f', 'pcrs.bin', '-g', 'sha256', '-q', '07'.repeat(32)]),
  );

  const ratio = (a: Stats | undefined, b: Stats | undefined): number =>
    a === undefined || b === undefined ? NaN : Number((b.medianMs / a.medianMs).toFixed(1));
  const result = {
    date: new Date().toISOString(),
    command: `node dist/bench/tpm.js${quick ? ' --quick' : ''}`,
    machine: describeMachine(['swtpm', 'tpm2-tools']),
    ours,
    tpm2Tools: theirs,
    speedupMedian: {
      pcrRead: ratio(ours.pcrRead, theirs.pcrRead),
      quoteEcc: ratio(ours.quoteAndPcrReadEcc, theirs.quoteEcc),
      verifyEcc: ratio(ours.verifyEcc, theirs.verifyEcc),
    },
  };
  const outDir = new URL('../../bench/results/', import.meta.url);
  mkdirSync(outDir, { recursive: true });
  writeFileSync(new URL('tpm.json', outDir), `${JSON.stringify(result, null, 2)}\n`);
  const rows = [
    ...Object.entries(ours).map(([k, v]) => [`ours ${k}`, v] as const),
    ...Object.entries(theirs).map(([k, v]) => [`tpm2-tools ${k}`, v] as const),
  ];
  for (const [name, s] of rows) process.stdout.write(`${name.padEnd(36)} n=${String(s.n).padStart(4)}  median ${s.medianMs.toFixed(3)} ms  p90 ${s.p90Ms.toFixed(3)} ms\n`);
  process.stdout.write(`speedup (tpm2-tools median / ours median): ${JSON.stringify(result.speedupMedian)}\n`);
} finally {
  await tpm.close();
  await swtpm.stop();
  rmSync(work, { recursive: true, force: true });
}
