/**
 * The running daemon in Keylime mode, reached as a Keylime verifier reaches an agent: over TCP,
 * HTTPS with the verifier's client certificate (mTLS, Keylime's default). A client without a
 * certificate, or with one from another CA, is refused; a verifier with its CA's certificate pulls
 * quotes (RSA AK, PCR 16 bound) and the incremental log while the daemon removes what it stored;
 * plain HTTP is refused off loopback. Real parts: swtpm, the FUSE securityfs emulator, LevelDB.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { AsciiListParser, PcrReplay } from '../../src/ima/index.js';
import { startDaemon, type DaemonCollectorOptions } from '../../src/daemon/index.js';
import { publicKeyFromTpm2b } from '../../src/tpm/index.js';
import { RIG_BANKS, startRig, type Rig } from '../collector/_rig.js';
import { checkIncrementalRound, text } from '../serve/_keylime.js';
import { httpsGet, makeTlsMaterial, type TlsMaterial } from '../serve/_tls.js';

function collectorOptions(rig: Rig): DaemonCollectorOptions {
  return { securityfsRoot: rig.emu.securityfsRoot, cmdlinePath: rig.cmdlinePath, bootIdPath: rig.bootIdPath, banks: RIG_BANKS, flavor: 'n', intervalMs: 20 };
}

describe('daemon in Keylime mode over TCP with mTLS', () => {
  let rig: Rig;
  let verifierCa: TlsMaterial;
  let otherCa: TlsMaterial;
  const payloadKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;

  before(async () => {
    rig = await startRig();
    await rig.store.close();
    verifierCa = makeTlsMaterial(rig.work, 'verifier');
    otherCa = makeTlsMaterial(rig.work, 'other');
  });
  after(async () => {
    await rig.reopenStore();
    await rig.stop();
  });

  it('refuses clients without a certificate or with another CA\'s; a verifier pulls quotes and the incremental log across removals', async () => {
    await rig.append(120);
    const stop = new AbortController();
    const daemon = await startDaemon({
      storeDir: rig.storeDir,
      tpm: rig.tpm,
      collector: collectorOptions(rig),
      signal: stop.signal,
      keylime: { payloadKey },
      api: { listen: { host: '127.0.0.1', port: 0, tls: { cert: verifierCa.serverCert, key: verifierCa.serverKey, ca: verifierCa.ca } } },
    });
    try {
      assert.ok(daemon.tcp !== undefined && daemon.tcp.address.startsWith('https://127.0.0.1:'));
      const port = Number(new URL(daemon.tcp.address).port);
      const verifier = { cert: verifierCa.clientCert, key: verifierCa.clientKey };
      await assert.rejects(httpsGet(port, '/version', verifierCa.ca), { code: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED' });
      // The server drops the handshake of a certificate it cannot verify.
      await assert.rejects(httpsGet(port, '/version', verifierCa.ca, { cert: otherCa.clientCert, key: otherCa.clientKey }), { code: 'ECONNRESET' });
      const version = await httpsGet(port, '/version', verifierCa.ca, verifier);
      assert.equal(version.status, 200);

      const rsaAk = await rig.tpm.createAk({ alg: 'rsa' });
      await rig.tpm.flush(rsaAk.handle);
      const ak = publicKeyFromTpm2b(rsaAk.public);
      const replay = new PcrReplay({ banks: { sha256: 'native' }, verifyDigests: false });
      const parser = new AsciiListParser({ bank: 'sha1' });
      let next = 0;
      let pubkey = '';
      for (let round = 0; round < 4; round++) {
        await rig.append(40);
        // Let the schedule store, checkpoint and remove what was appended.
        while (daemon.collector.status().removed < 120 + 40 * round) await new Promise((resolve) => setTimeout(resolve, 20));
        const nonce = `mtls${round}`;
        const reply = await httpsGet(port, `/v2.2/quotes/integrity?nonce=${nonce}&mask=0x400&partial=${round === 0 ? 0 : 1}&ima_ml_entry=${next}`, verifierCa.ca, verifier);
        assert.equal(reply.status, 200, reply.body.slice(0, 300));
        const r = (JSON.parse(reply.body) as { results: Record<string, unknown> }).results;
        if (round === 0) pubkey = text(r, 'pubkey');
        assert.equal(r.sign_alg, 'rsassa');
        assert.equal(r.ima_measurement_list_entry, next);
        // Nothing is appended meanwhile: the list ends at the quoted PCR 10.
        const list = checkIncrementalRound(r, { nonce, ak, pubkey, index: round }, replay, parser);
        next += list.split('\n').length - 1;
      }
      assert.equal(next, 120 + 4 * 40);
    } finally {
      stop.abort();
      await daemon.stopped;
    }
    assert.equal(existsSync(daemon.paths.socket), false);
  });

  it('plain HTTP off loopback is refused at start, and the start closes what it opened', async () => {
    const socket = join(rig.work, 'insecure.sock');
    await assert.rejects(
      startDaemon({ storeDir: rig.storeDir, tpm: rig.tpm, collector: collectorOptions(rig), api: { socket, listen: { host: '0.0.0.0', port: 0 } } }),
      { code: 'SERVE_INSECURE_BIND' },
    );
    assert.equal(existsSync(socket), false);
  });
});
