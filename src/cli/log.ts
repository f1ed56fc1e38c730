/**
 * `imakeep log`: a boot's whole log (stored part + kernel part) in the kernel's formats, byte for
 * byte what `{binary,ascii}_runtime_measurements_<bank>` would show had nothing been removed.
 *
 *   imakeep log --store DIR [--securityfs DIR] [--from N] [--format binary|ascii] [--bank B]
 *               [--boot ID] [--socket PATH] [--boot-id-file PATH]
 *
 * While `imakeep run` holds the store, the log comes from its socket; otherwise from the store,
 * plus the kernel's records when `--securityfs` is given and the boot asked for is the running
 * kernel's (its boot id matches).
 */
import { pipeline } from 'node:stream/promises';
import { DEFAULT_BOOT_ID_PATH, runningKernelTail } from '../collector/index.js';
import { daemonGet, daemonPaths } from '../daemon/index.js';
import { openStore, StoreError, type ImaStore } from '../store/index.js';
import { openLog, type LogQuery } from '../serve/index.js';
import { bankArg, choiceOption, integerOption, parseVerbArgs, requireOptions, writeStdout, type CliVerb } from './_verb.js';

/** Usage of `imakeep log`. */
export const usage = `usage: imakeep log --store DIR [--securityfs DIR] [--from N] [--format binary|ascii] [--bank B]
                   [--boot ID] [--socket PATH] [--boot-id-file PATH]`;

const log: CliVerb = async (argv) => {
  const { values } = parseVerbArgs(
    argv,
    {
      store: { type: 'string' },
      securityfs: { type: 'string' },
      from: { type: 'string' },
      format: { type: 'string' },
      bank: { type: 'string' },
      boot: { type: 'string' },
      socket: { type: 'string' },
      'boot-id-file': { type: 'string' },
    },
    false,
  );
  const { store: storeDir } = requireOptions(values, ['store']);
  const format = choiceOption('format', values.format ?? 'binary', ['binary', 'ascii'] as const);
  const bank = bankArg(values.bank ?? 'sha1', '--bank');
  const query: LogQuery = { boot: integerOption('boot', values.boot, 0), from: integerOption('from', values.from, 0), format, bank };

  let store: ImaStore;
  try {
    store = await openStore(storeDir);
  } catch (e) {
    if (!(e instanceof StoreError && e.code === 'STORE_LOCKED')) throw e;
    // The daemon holds the store: ask it.
    const params = new URLSearchParams({ format, bank });
    if (query.boot !== undefined) params.set('boot', String(query.boot));
    if (query.from !== undefined) params.set('from', String(query.from));
    const res = await daemonGet(values.socket ?? daemonPaths(storeDir).socket, `/v1/log?${params.toString()}`);
    await pipeline(res, process.stdout, { end: false });
    return 0;
  }
  try {
    // The kernel's part, when the boot asked for is the running kernel's.
    const tail =
      values.securityfs === undefined || (query.boot !== undefined && query.boot !== store.currentBoot)
        ? undefined
        : await runningKernelTail(store, values.securityfs, values['boot-id-file'] ?? DEFAULT_BOOT_ID_PATH);
    const opened = await openLog({ store, tail }, query);
    for await (const bytes of opened.bytes()) await writeStdout(bytes);
    return 0;
  } finally {
    await store.close();
  }
};

export default log;
