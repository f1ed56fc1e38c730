/** Database failures as `FLEET_STORAGE`, carrying PostgreSQL's SQLSTATE when there is one. */
import { isImakeepError } from '../errors.js';
import { FleetError } from './errors.js';

/** The error to throw for a failed statement (`what` says which, cut short). */
export function storageError(e: unknown, what: string): unknown {
  if (isImakeepError(e)) return e;
  const sqlState = typeof e === 'object' && e !== null && 'code' in e && typeof e.code === 'string' ? e.code : undefined;
  const message = e instanceof Error ? e.message : String(e);
  return new FleetError('FLEET_STORAGE', `database: ${message} (in: ${what.replace(/\s+/g, ' ').slice(0, 80)})`, sqlState === undefined ? {} : { causeCode: sqlState }, { cause: e });
}
