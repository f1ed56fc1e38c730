/**
 * `imakeep keylime registration|register`: the device's registration with a Keylime registrar
 * (src/enroll/keylime.ts), so that a stock Keylime verifier attests it (README, "Keylime").
 *
 *   imakeep keylime registration --uuid ID [--tpm ADDR] [--ek TEMPLATE] [--mtls-cert PEM] [--ip IP] [--port N]
 *   imakeep keylime register --registrar URL --uuid ID [--tpm ADDR] [--ek TEMPLATE] [--mtls-cert PEM]
 *                            [--ip IP] [--port N] [--api-version 2.x]
 *
 * `registration` prints the body `register` would POST (JSON), sending nothing: the AK a registrar
 * will hold. `register` sends it, activates the returned credential with the TPM and sends the
 * `auth_tag`; it prints the registration and the tag.
 */
import { readFileSync } from 'node:fs';
import { KEYLIME_REGISTRAR_API_VERSION, keylimeRegistration, registerWithKeylime, type KeylimeRegistrationOptions } from '../enroll/index.js';
import { UsageError } from '../errors.js';
import { EK_TEMPLATES, Tpm, type EkTemplateName } from '../tpm/index.js';
import { integerOption, parseVerbArgs, requireOptions, runSubcommand, tpmAddress, writeStdout, type CliVerb } from './_verb.js';

/** Usage of `imakeep keylime`. */
export const usage = `usage: imakeep keylime registration --uuid ID [--tpm ADDR] [--ek TEMPLATE] [--mtls-cert PEM] [--ip IP] [--port N]
       imakeep keylime register --registrar URL --uuid ID [--tpm ADDR] [--ek TEMPLATE] [--mtls-cert PEM]
                                [--ip IP] [--port N] [--api-version 2.x]
registration prints the JSON body register would POST to the registrar (/v2.x/agents/ID), sending
nothing. register POSTs it, activates the registrar's credential with the TPM (ActivateCredential
with the EK and the Keylime-mode AK: RSA 2048, RSASSA-SHA256) and PUTs the auth_tag
(/v2.x/agents/ID/activate; --api-version default ${KEYLIME_REGISTRAR_API_VERSION}). --mtls-cert: the PEM server
certificate of imakeep run --keylime's HTTPS listener (else mtls_cert is "disabled"); --ip and
--port: where the verifier reaches that listener. ADDR: swtpm:HOST:PORT | device:/dev/tpmrm0 (the
default); --ek: ${[...EK_TEMPLATES.keys()].join(', ')} (default the first with a certificate).`;

const OPTIONS = {
  uuid: { type: 'string' },
  tpm: { type: 'string' },
  ek: { type: 'string' },
  'mtls-cert': { type: 'string' },
  ip: { type: 'string' },
  port: { type: 'string' },
} as const;

function registrationOptions(values: { uuid: string; ek?: string; 'mtls-cert'?: string; ip?: string; port?: string }): KeylimeRegistrationOptions {
  const ek = values.ek;
  if (ek !== undefined && !EK_TEMPLATES.has(ek as EkTemplateName)) throw new UsageError(`--ek must be one of ${[...EK_TEMPLATES.keys()].join(', ')}, not '${ek}'`);
  let mtlsCert: string | undefined;
  if (values['mtls-cert'] !== undefined) {
    try {
      mtlsCert = readFileSync(values['mtls-cert'], 'utf8');
    } catch (e) {
      throw new UsageError(`--mtls-cert: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  const port = integerOption('port', values.port, 1);
  return {
    uuid: values.uuid,
    ...(ek === undefined ? {} : { ekTemplate: ek as EkTemplateName }),
    ...(mtlsCert === undefined ? {} : { mtlsCert }),
    ...(values.ip === undefined ? {} : { ip: values.ip }),
    ...(port === undefined ? {} : { port }),
  };
}

async function withTpm<T>(address: string | undefined, use: (tpm: Tpm) => Promise<T>): Promise<T> {
  const tpm = Tpm.open(tpmAddress(address));
  try {
    return await use(tpm);
  } finally {
    await tpm.close();
  }
}

const registration: CliVerb = async (argv) => {
  const { values } = parseVerbArgs(argv, OPTIONS, false);
  const options = registrationOptions(requireOptions(values, ['uuid']));
  const prepared = await withTpm(values.tpm, (tpm) => keylimeRegistration(tpm, options));
  await writeStdout(`${JSON.stringify(prepared.body, null, 2)}\n`);
  return 0;
};

const register: CliVerb = async (argv) => {
  const { values } = parseVerbArgs(argv, { ...OPTIONS, registrar: { type: 'string' }, 'api-version': { type: 'string' } }, false);
  const given = requireOptions(values, ['uuid', 'registrar']);
  const apiVersion = values['api-version'];
  if (apiVersion !== undefined && !/^2\.\d{1,2}$/.test(apiVersion)) throw new UsageError(`--api-version must be 2.x, not '${apiVersion}'`);
  const options = { ...registrationOptions(given), registrar: given.registrar, ...(apiVersion === undefined ? {} : { apiVersion }) };
  const { registration: sent, authTag } = await withTpm(values.tpm, (tpm) => registerWithKeylime(tpm, options));
  await writeStdout(`${JSON.stringify({ registered: sent.uuid, body: sent.body, auth_tag: authTag }, null, 2)}\n`);
  return 0;
};

const keylime: CliVerb = (argv) => runSubcommand('keylime', { registration, register }, argv);

export default keylime;
