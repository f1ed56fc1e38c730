/**
 * The fleet's one schema, as versioned migrations applied in order and recorded in
 * `fleet_migrations`. A process applies what is missing under a transaction-scoped advisory lock,
 * so several fleet processes starting together on one server migrate once; a database whose
 * schema is newer than this code is refused (`FLEET_SCHEMA`), never written.
 */
import { FleetError } from './errors.js';
import type { SqlDatabase } from './sql.js';

/** Migrations by version: each a list of statements, never edited once released. */
export const MIGRATIONS: readonly (readonly string[])[] = [
  [
    // The fleet's signing key (EAR tokens): one row, shared by every process on the database.
    `CREATE TABLE fleet_keys (id integer PRIMARY KEY CHECK (id = 1), private_pem text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`,
    // One row per device: enrollment, and where its verified evidence ends (the row lock
    // serialises the device's chain).
    `CREATE TABLE devices (
      id text PRIMARY KEY,
      enrollment text NOT NULL CHECK (enrollment IN ('pending', 'approved', 'refused')),
      ak_public bytea,
      ek_certificate bytea,
      policy text,
      state text,
      records_verified bigint NOT NULL DEFAULT 0,
      verdict text NOT NULL DEFAULT 'pending' CHECK (verdict IN ('pass', 'fail', 'pending')),
      failures text NOT NULL DEFAULT '[]',
      ack_seq bigint NOT NULL DEFAULT 0,
      last_seen timestamptz,
      fresh_nonce bytea,
      fresh_at timestamptz,
      created_at timestamptz NOT NULL DEFAULT now()
    )`,
    `CREATE TABLE boots (device_id text NOT NULL REFERENCES devices (id), boot integer NOT NULL, info bytea NOT NULL, PRIMARY KEY (device_id, boot))`,
    // Evidence exactly as the device committed it: chunk and checkpoint values of its store.
    `CREATE TABLE chunks (
      device_id text NOT NULL REFERENCES devices (id), boot integer NOT NULL, first_index bigint NOT NULL,
      record_count integer NOT NULL, value bytea NOT NULL, PRIMARY KEY (device_id, boot, first_index)
    )`,
    `CREATE TABLE checkpoints (
      device_id text NOT NULL REFERENCES devices (id), boot integer NOT NULL, record_count bigint NOT NULL,
      value bytea NOT NULL, PRIMARY KEY (device_id, boot, record_count)
    )`,
    // One verdict and one acknowledgement per accepted bundle, numbered per device.
    `CREATE TABLE verdicts (
      device_id text NOT NULL REFERENCES devices (id), seq bigint NOT NULL, cursor text NOT NULL, next text NOT NULL,
      records integer NOT NULL, verdict text NOT NULL, failures text NOT NULL, at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (device_id, seq)
    )`,
    `CREATE TABLE acks (
      device_id text NOT NULL REFERENCES devices (id), seq bigint NOT NULL, cursor text NOT NULL, token text NOT NULL,
      at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (device_id, seq)
    )`,
  ],
  [
    // Self-enrollment (service.ts): the verifier's pending state of each challenge, kept until the
    // device answers (days later for a device that is offline) or it expires.
    `CREATE TABLE enroll_challenges (
      challenge_id text PRIMARY KEY, device_id text NOT NULL, pending text NOT NULL,
      expires_at timestamptz NOT NULL, created_at timestamptz NOT NULL DEFAULT now()
    )`,
    // SHA-256 of the bearer token the device was given at enrollment (the token itself is never stored).
    `ALTER TABLE devices ADD COLUMN token_hash bytea`,
  ],
];

/** The schema version this code writes. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/** Arbitrary key of the advisory lock migrations hold (pg_advisory_xact_lock takes a bigint). */
const MIGRATION_LOCK = 0x696d616b; // 'imak'

/** Applies the missing migrations; returns the schema version. Throws `FLEET_SCHEMA` for a newer database. */
export async function migrate(db: SqlDatabase): Promise<number> {
  return db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    await tx.query('CREATE TABLE IF NOT EXISTS fleet_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())');
    const rows = await tx.query('SELECT coalesce(max(version), 0) AS version FROM fleet_migrations');
    const current = Number(rows[0]?.version ?? 0);
    if (current > SCHEMA_VERSION) {
      throw new FleetError('FLEET_SCHEMA', `the database schema is version ${current}; this imakeep knows up to ${SCHEMA_VERSION}`, { check: 'schema-version' });
    }
    for (let version = current + 1; version <= SCHEMA_VERSION; version++) {
      for (const statement of MIGRATIONS[version - 1] ?? []) await tx.query(statement);
      await tx.query('INSERT INTO fleet_migrations (version) VALUES ($1)', [version]);
    }
    return SCHEMA_VERSION;
  });
}
