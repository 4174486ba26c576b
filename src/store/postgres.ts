/**
 * The PostgreSQL store: the `Store` contract (store.ts) in a PostgreSQL database through a small `pg`
 * pool. It is the store for members on several machines: they all open the same database.
 *
 * Guarantees:
 * - Durable commits: each write is one transaction (or one autocommit statement) and resolves after
 *   COMMIT returns, so it is as durable as the server's commit (relies on synchronous_commit = on, the
 *   default).
 * - The schema is created on open with CREATE TABLE IF NOT EXISTS inside a transaction holding
 *   pg_advisory_xact_lock(SCHEMA_LOCK_KEY), so members opening a fresh database at once do not race on
 *   the catalog; a `keylock_meta` row records the schema version and a newer version is refused. A
 *   version 1 database is migrated in that same transaction (v2 adds the process columns: clients'
 *   pid_start, slot events' pid and pid_start; version 1 client pids were named by the clients themselves
 *   and are reset to 0); a version 2 one gains the clients' resume_key and claim_key (greeting v2, empty
 *   for older records); a version 3 one gains the keylock_grant_tag_key table (empty until the first
 *   grantTagKey call). Every table is prefixed `keylock_`, so the store can share a database with an
 *   application.
 * - The grant-tag key is one bytea row (id 1) of keylock_grant_tag_key: read; if absent,
 *   `INSERT ... ON CONFLICT (id) DO NOTHING` and read again, each its own statement. Of members racing to
 *   make it, one inserts; an insert that conflicts waits for the winner's commit, and the read after it
 *   (a new snapshot) sees the winner's bytes.
 * - format: `INSERT ... ON CONFLICT (id) DO NOTHING` on the single config row; of concurrent formats
 *   exactly one inserts, every other one waits for it and then finds the row (EEXIST).
 * - raiseSeqHighWater is one statement, `UPDATE ... SET high_water = GREATEST(high_water, $1)
 *   RETURNING high_water`: never lowers, no read-modify-write window.
 * - Slot writes (writeSlotEvent, writeElect) take `LOCK TABLE keylock_slot_events IN SHARE ROW EXCLUSIVE
 *   MODE`, which conflicts with itself and not with plain reads. Slot writes from all members are
 *   therefore serialized: writeElect's "no event with a higher term in any slot" check and its write
 *   happen with no other slot write in between, and a slot's next write number is never handed out twice.
 * - Unsigned 64-bit values (rid, term, seq high-water) are `numeric(20,0)` with a CHECK for
 *   0..2^64-1: exact, ordered numerically by the server (ORDER BY rid, term > $1, GREATEST), readable in
 *   psql. They travel as decimal strings in both directions (pg returns numeric as a string), so no
 *   value passes through a JavaScript number. Millisecond times are bigint (int8) and parsed with
 *   Number (they are validated safe integers on the way in).
 * - `url` has the password redacted. Driver errors become StoreError EIO with the driver error as cause;
 *   after EIO the outcome of that write is unknown (e.g. the connection died during COMMIT).
 *
 * Relies on: the PostgreSQL server (any supported version; uses only SQL from 9.5 on). A statement that
 * cannot finish in POSTGRES_STATEMENT_TIMEOUT_MS fails with EIO rather than stalling a member forever.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { GRANT_TAG_KEY_BYTES } from "../core/grant-tags.js";
import {
  checkClientRecord,
  checkSlotEventInput,
  checkSlotEventKind,
  checkSlotNumber,
  checkU64,
  grantTagKeyFromStore,
  parseStoreUrl,
  SLOT_EVENT_KINDS,
  StoreError,
  toStoreError,
  validateClusterConfig,
  type ClusterConfig,
  type MountedClientRecord,
  type SlotEventInput,
  type SlotEventKind,
  type SlotRecord,
  type Store,
} from "./store.js";

export const POSTGRES_SCHEMA_VERSION = 4;
export const POSTGRES_POOL_MAX = 4;
export const POSTGRES_CONNECT_TIMEOUT_MS = 5000;
export const POSTGRES_STATEMENT_TIMEOUT_MS = 10_000;
/** Client-side bound: a query whose connection went silent fails after this long. */
export const POSTGRES_QUERY_TIMEOUT_MS = 15_000;
export const POSTGRES_IDLE_TIMEOUT_MS = 10_000;
/** pg_advisory_xact_lock key guarding schema creation: "keylock" in ASCII. */
const SCHEMA_LOCK_KEY = 0x6b65796c6f636bn;

const U64 = (column: string): string =>
  `${column} numeric(20,0) NOT NULL CHECK (${column} BETWEEN 0 AND 18446744073709551615)`;
const KIND_LIST = SLOT_EVENT_KINDS.map((k) => `'${k}'`).join(", ");

/** The grant-tag key (store.ts): at most one row, GRANT_TAG_KEY_BYTES bytes. Schema version 4 on. */
const GRANT_TAG_KEY_TABLE = `CREATE TABLE IF NOT EXISTS keylock_grant_tag_key (
     id smallint PRIMARY KEY CHECK (id = 1),
     key bytea NOT NULL CHECK (octet_length(key) = ${GRANT_TAG_KEY_BYTES}))`;

const SCHEMA = [
  `CREATE TABLE IF NOT EXISTS keylock_meta (
     name text PRIMARY KEY,
     value text NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS keylock_config (
     id smallint PRIMARY KEY CHECK (id = 1),
     cluster_id text NOT NULL,
     secret_digest text,
     formatted_at_ms bigint NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS keylock_config_slots (
     slot smallint PRIMARY KEY CHECK (slot BETWEEN 0 AND 14),
     host text NOT NULL,
     port integer NOT NULL CHECK (port BETWEEN 1 AND 65534),
     UNIQUE (host, port))`,
  `CREATE TABLE IF NOT EXISTS keylock_seq (
     id smallint PRIMARY KEY CHECK (id = 1),
     ${U64("high_water")})`,
  `CREATE TABLE IF NOT EXISTS keylock_clients (
     ${U64("rid")} PRIMARY KEY,
     name text NOT NULL,
     address text NOT NULL,
     pid integer NOT NULL,
     hostname text NOT NULL,
     greeted_at_ms bigint NOT NULL,
     pid_start text NOT NULL DEFAULT '',
     resume_key text NOT NULL DEFAULT '',
     claim_key text NOT NULL DEFAULT '')`,
  `CREATE TABLE IF NOT EXISTS keylock_slot_events (
     slot smallint NOT NULL CHECK (slot BETWEEN 0 AND 14),
     kind text NOT NULL CHECK (kind IN (${KIND_LIST})),
     ${U64("term")},
     ${U64("rid")},
     time_ms bigint NOT NULL,
     write_nr bigint NOT NULL,
     pid integer NOT NULL DEFAULT 0,
     pid_start text NOT NULL DEFAULT '',
     PRIMARY KEY (slot, kind))`,
  GRANT_TAG_KEY_TABLE,
];

/** Version 1 → 2: the process columns. Old client pids came from the clients' greetings: not kept. */
const MIGRATE_1_TO_2 = [
  "ALTER TABLE keylock_clients ADD COLUMN pid_start text NOT NULL DEFAULT ''",
  "UPDATE keylock_clients SET pid = 0",
  "ALTER TABLE keylock_slot_events ADD COLUMN pid integer NOT NULL DEFAULT 0",
  "ALTER TABLE keylock_slot_events ADD COLUMN pid_start text NOT NULL DEFAULT ''",
  "UPDATE keylock_meta SET value = '2' WHERE name = 'schema_version'",
];

/** Version 2 → 3: greeting v2's resumption keys; older records have none (their clients are fenced). */
const MIGRATE_2_TO_3 = [
  "ALTER TABLE keylock_clients ADD COLUMN resume_key text NOT NULL DEFAULT ''",
  "ALTER TABLE keylock_clients ADD COLUMN claim_key text NOT NULL DEFAULT ''",
  "UPDATE keylock_meta SET value = '3' WHERE name = 'schema_version'",
];

/** Version 3 → 4: the grant-tag key's table, empty until a member first asks for the key. */
const MIGRATE_3_TO_4 = [
  GRANT_TAG_KEY_TABLE,
  "UPDATE keylock_meta SET value = '4' WHERE name = 'schema_version'",
];

interface ConfigRow {
  cluster_id: string;
  secret_digest: string | null;
  formatted_at_ms: string;
}
interface ClientRow {
  rid: string;
  name: string;
  address: string;
  pid: number;
  pid_start: string;
  hostname: string;
  greeted_at_ms: string;
  resume_key: string;
  claim_key: string;
}
interface EventRow {
  slot: number;
  kind: string;
  term: string;
  rid: string;
  time_ms: string;
  write_nr: string;
  pid: number;
  pid_start: string;
}

/** A numeric(20,0) / int8 value as pg returns it (a decimal string) → bigint, refusing anything else. */
function u64FromRow(value: unknown, what: string): bigint {
  if (typeof value !== "string" || !/^[0-9]{1,20}$/.test(value)) {
    throw new StoreError("EIO", `corrupt ${what} in the PostgreSQL store: ${String(value)}`);
  }
  return checkU64(BigInt(value), what);
}

function numberFromRow(value: unknown, what: string): number {
  const n = typeof value === "number" ? value : Number(value);
  if (!Number.isSafeInteger(n))
    throw new StoreError("EIO", `corrupt ${what} in the PostgreSQL store: ${String(value)}`);
  return n;
}

function clientFromRow(row: ClientRow): MountedClientRecord {
  return {
    rid: u64FromRow(row.rid, "client rid"),
    name: row.name,
    address: row.address,
    pid: numberFromRow(row.pid, "client pid"),
    pidStart: row.pid_start,
    hostname: row.hostname,
    greetedAtMs: numberFromRow(row.greeted_at_ms, "client greetedAtMs"),
    resumeKey: row.resume_key,
    claimKey: row.claim_key,
  };
}

export class PostgresStore implements Store {
  readonly url: string;
  private pool: pg.Pool | null;
  private closing: Promise<void> | null = null;
  private formatted = false;

  /** Connect, create the schema if needed; rejects with StoreError (EINVAL for a bad URL, EIO otherwise). */
  static async open(url: string, options: { poolMax?: number } = {}): Promise<PostgresStore> {
    const parsed = parseStoreUrl(url);
    if (parsed.kind !== "postgres")
      throw new StoreError("EINVAL", `not a PostgreSQL store URL: ${parsed.kind}`);
    const pool = new pg.Pool({
      connectionString: parsed.connectionString,
      max: options.poolMax ?? POSTGRES_POOL_MAX,
      connectionTimeoutMillis: POSTGRES_CONNECT_TIMEOUT_MS,
      idleTimeoutMillis: POSTGRES_IDLE_TIMEOUT_MS,
      statement_timeout: POSTGRES_STATEMENT_TIMEOUT_MS,
      query_timeout: POSTGRES_QUERY_TIMEOUT_MS,
      keepAlive: true,
      application_name: "keylock",
    });
    // An idle connection that dies (server restart, network) is dropped by the pool; the next query opens
    // a new one or fails with EIO, so the event itself is not an error to act on.
    pool.on("error", () => {});
    const store = new PostgresStore(parsed.redacted, pool);
    try {
      await store.transaction("creating the schema", async (client) => {
        await client.query("SELECT pg_advisory_xact_lock($1::bigint)", [SCHEMA_LOCK_KEY.toString()]);
        // All tables are created in one transaction, so keylock_meta existing means they all do.
        const { rows: present } = await client.query<{ present: boolean }>(
          "SELECT to_regclass('keylock_meta') IS NOT NULL AS present",
        );
        if (present[0]?.present !== true) for (const statement of SCHEMA) await client.query(statement);
        await client.query(
          "INSERT INTO keylock_meta (name, value) VALUES ('schema_version', $1) ON CONFLICT (name) DO NOTHING",
          [String(POSTGRES_SCHEMA_VERSION)],
        );
        const readVersion = async (): Promise<{ value: string }[]> =>
          (await client.query<{ value: string }>("SELECT value FROM keylock_meta WHERE name = 'schema_version'")).rows;
        if ((await readVersion())[0]?.value === "1") for (const statement of MIGRATE_1_TO_2) await client.query(statement);
        if ((await readVersion())[0]?.value === "2") for (const statement of MIGRATE_2_TO_3) await client.query(statement);
        if ((await readVersion())[0]?.value === "3") for (const statement of MIGRATE_3_TO_4) await client.query(statement);
        const rows = await readVersion();
        const version = rows[0]?.value;
        if (Number(version) !== POSTGRES_SCHEMA_VERSION) {
          throw new StoreError(
            "EINVAL",
            `${store.url} has store schema version ${version}; this keylock reads version ${POSTGRES_SCHEMA_VERSION}`,
          );
        }
      });
    } catch (error) {
      await store.close().catch(() => {}); // already failing to open; the open error is the one to report
      throw toStoreError(`opening PostgreSQL store ${store.url}`, error);
    }
    return store;
  }

  private constructor(url: string, pool: pg.Pool) {
    this.url = url;
    this.pool = pool;
  }

  private openPool(what: string): pg.Pool {
    if (this.pool === null) throw new StoreError("EIO", `${what}: the store is closed`);
    return this.pool;
  }

  private async query<R extends pg.QueryResultRow>(
    what: string,
    sql: string,
    params: unknown[] = [],
  ): Promise<R[]> {
    try {
      const result = await this.openPool(what).query<R>(sql, params);
      return result.rows;
    } catch (error) {
      throw toStoreError(`${what} (${this.url})`, error);
    }
  }

  /** BEGIN; fn; COMMIT on one pooled connection. Any failure rolls back and rejects with a StoreError. */
  private async transaction<T>(what: string, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.openPool(what).connect();
    } catch (error) {
      throw toStoreError(`${what} (${this.url})`, error);
    }
    // The pool stops listening for errors on a checked-out connection; without a listener, a connection
    // lost between two queries of this transaction would be an uncaught 'error'. The next query fails
    // with the same cause, and that failure is reported.
    const ignoreUntilNextQuery = (): void => {};
    client.on("error", ignoreUntilNextQuery);
    try {
      await client.query("BEGIN");
      const result = await fn(client);
      await client.query("COMMIT");
      client.removeListener("error", ignoreUntilNextQuery);
      client.release();
      return result;
    } catch (error) {
      try {
        await client.query("ROLLBACK");
        client.removeListener("error", ignoreUntilNextQuery);
        client.release();
      } catch (rollbackError) {
        // The connection is unusable; destroying it is the whole remedy, and `error` is what to report.
        client.release(rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError)));
      }
      throw toStoreError(`${what} (${this.url})`, error);
    }
  }

  /** Throws ENOTFORMATTED unless a config exists. Formatting is permanent, so a yes is remembered. */
  private async requireFormatted(what: string, client?: pg.PoolClient): Promise<void> {
    if (this.formatted) return;
    const sql = "SELECT 1 AS found FROM keylock_config WHERE id = 1";
    const rows = client === undefined ? await this.query(what, sql) : (await client.query(sql)).rows;
    if (rows.length === 0)
      throw new StoreError("ENOTFORMATTED", `${what}: the store ${this.url} is not formatted`);
    this.formatted = true;
  }

  async format(config: ClusterConfig): Promise<void> {
    const valid = validateClusterConfig(config);
    await this.transaction("format", async (client) => {
      const inserted = await client.query(
        `INSERT INTO keylock_config (id, cluster_id, secret_digest, formatted_at_ms) VALUES (1, $1, $2, $3)
         ON CONFLICT (id) DO NOTHING RETURNING id`,
        [valid.clusterId, valid.secretDigest, valid.formattedAtMs],
      );
      if (inserted.rowCount !== 1) {
        const { rows } = await client.query<{ cluster_id: string }>("SELECT cluster_id FROM keylock_config");
        throw new StoreError("EEXIST", `the store is already formatted for cluster ${rows[0]?.cluster_id}`);
      }
      for (const s of valid.slots) {
        await client.query("INSERT INTO keylock_config_slots (slot, host, port) VALUES ($1, $2, $3)", [
          s.slot,
          s.host,
          s.port,
        ]);
      }
      await client.query(
        "INSERT INTO keylock_seq (id, high_water) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
      );
    });
  }

  async readConfig(): Promise<ClusterConfig | null> {
    // One transaction so the config row and its slots come from the same snapshot (REPEATABLE READ).
    return this.transaction("readConfig", async (client) => {
      await client.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ");
      const { rows } = await client.query<ConfigRow>(
        "SELECT cluster_id, secret_digest, formatted_at_ms FROM keylock_config WHERE id = 1",
      );
      const row = rows[0];
      if (row === undefined) return null;
      const slots = await client.query<{ slot: number; host: string; port: number }>(
        "SELECT slot, host, port FROM keylock_config_slots ORDER BY slot",
      );
      return {
        clusterId: row.cluster_id,
        slots: slots.rows.map((s) => ({ slot: s.slot, host: s.host, port: s.port })),
        secretDigest: row.secret_digest,
        formattedAtMs: numberFromRow(row.formatted_at_ms, "formattedAtMs"),
      };
    });
  }

  async readSeqHighWater(): Promise<bigint> {
    const rows = await this.query<{ high_water: string }>(
      "readSeqHighWater",
      "SELECT high_water::text AS high_water FROM keylock_seq WHERE id = 1",
    );
    const row = rows[0];
    return row === undefined ? 0n : u64FromRow(row.high_water, "seq high-water");
  }

  async raiseSeqHighWater(atLeast: bigint): Promise<bigint> {
    const value = checkU64(atLeast, "seq high-water");
    await this.requireFormatted("raiseSeqHighWater");
    const rows = await this.query<{ high_water: string }>(
      "raiseSeqHighWater",
      `UPDATE keylock_seq SET high_water = GREATEST(high_water, $1::numeric) WHERE id = 1
       RETURNING high_water::text AS high_water`,
      [value.toString()],
    );
    const row = rows[0];
    if (row === undefined)
      throw new StoreError("EIO", `raiseSeqHighWater: the seq row is missing in ${this.url}`);
    return u64FromRow(row.high_water, "seq high-water");
  }

  async insertClient(record: MountedClientRecord): Promise<void> {
    const r = checkClientRecord(record);
    await this.requireFormatted("insertClient");
    // ON CONFLICT DO NOTHING: an existing rid keeps its first record and the insert succeeds (B21).
    await this.query(
      "insertClient",
      `INSERT INTO keylock_clients (rid, name, address, pid, pid_start, hostname, greeted_at_ms, resume_key, claim_key)
       VALUES ($1::numeric, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (rid) DO NOTHING`,
      [r.rid.toString(), r.name, r.address, r.pid, r.pidStart, r.hostname, r.greetedAtMs, r.resumeKey, r.claimKey],
    );
  }

  async deleteClient(rid: bigint): Promise<void> {
    const key = checkU64(rid, "client rid");
    await this.requireFormatted("deleteClient");
    await this.query("deleteClient", "DELETE FROM keylock_clients WHERE rid = $1::numeric", [key.toString()]);
  }

  async getClient(rid: bigint): Promise<MountedClientRecord | null> {
    const key = checkU64(rid, "client rid");
    const rows = await this.query<ClientRow>(
      "getClient",
      "SELECT rid::text AS rid, name, address, pid, pid_start, hostname, greeted_at_ms, resume_key, claim_key FROM keylock_clients WHERE rid = $1::numeric",
      [key.toString()],
    );
    const row = rows[0];
    return row === undefined ? null : clientFromRow(row);
  }

  async listClients(): Promise<MountedClientRecord[]> {
    const rows = await this.query<ClientRow>(
      "listClients",
      "SELECT rid::text AS rid, name, address, pid, pid_start, hostname, greeted_at_ms, resume_key, claim_key FROM keylock_clients ORDER BY keylock_clients.rid",
    );
    return rows.map(clientFromRow);
  }

  async readSlots(): Promise<SlotRecord[]> {
    const rows = await this.query<EventRow>(
      "readSlots",
      `SELECT slot, kind, term::text AS term, rid::text AS rid, time_ms, write_nr, pid, pid_start
       FROM keylock_slot_events ORDER BY slot, write_nr`,
    );
    const out: SlotRecord[] = [];
    for (const row of rows) {
      let record = out[out.length - 1];
      if (record === undefined || record.slot !== row.slot) {
        record = { slot: row.slot, events: {} };
        out.push(record);
      }
      record.events[checkSlotEventKind(row.kind)] = {
        term: u64FromRow(row.term, "slot event term"),
        rid: u64FromRow(row.rid, "slot event rid"),
        timeMs: numberFromRow(row.time_ms, "slot event timeMs"),
        writeNr: numberFromRow(row.write_nr, "slot event writeNr"),
        ...(row.pid === 0 ? {} : { pid: numberFromRow(row.pid, "slot event pid"), pidStart: row.pid_start }),
      };
    }
    return out;
  }

  async writeSlotEvent(slot: number, kind: SlotEventKind, event: SlotEventInput): Promise<void> {
    const valid = checkSlotEventInput(event);
    checkSlotNumber(slot);
    checkSlotEventKind(kind);
    await this.transaction("writeSlotEvent", async (client) => {
      await this.lockSlotWrites(client, "writeSlotEvent", slot);
      await this.writeEvent(client, slot, kind, valid);
    });
  }

  async writeElect(slot: number, event: SlotEventInput): Promise<boolean> {
    const valid = checkSlotEventInput(event);
    checkSlotNumber(slot);
    return this.transaction("writeElect", async (client) => {
      await this.lockSlotWrites(client, "writeElect", slot);
      // The table lock keeps every other slot write out until COMMIT: nothing can slip in between.
      const higher = await client.query(
        "SELECT 1 AS found FROM keylock_slot_events WHERE term > $1::numeric LIMIT 1",
        [valid.term.toString()],
      );
      if (higher.rows.length > 0) return false;
      await this.writeEvent(client, slot, "ELECT", valid);
      return true;
    });
  }

  async grantTagKey(): Promise<Uint8Array> {
    const read = async (): Promise<unknown> => {
      const rows = await this.query<{ key: unknown }>(
        "grantTagKey",
        "SELECT key FROM keylock_grant_tag_key WHERE id = 1",
      );
      return rows[0]?.key;
    };
    let key = await read();
    if (key === undefined) {
      await this.requireFormatted("grantTagKey");
      // Separate statements (autocommit): the read after a conflicting insert takes a new snapshot.
      await this.query(
        "grantTagKey",
        "INSERT INTO keylock_grant_tag_key (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        [randomBytes(GRANT_TAG_KEY_BYTES)],
      );
      key = await read();
    }
    return grantTagKeyFromStore(key, `the PostgreSQL store ${this.url}`);
  }

  async close(): Promise<void> {
    const pool = this.pool;
    this.pool = null;
    if (pool !== null) this.closing = pool.end();
    try {
      await this.closing;
    } catch (error) {
      throw toStoreError(`closing ${this.url}`, error);
    }
  }

  /** Serialize against every other slot write, then check the slot is configured. */
  private async lockSlotWrites(client: pg.PoolClient, what: string, slot: number): Promise<void> {
    await client.query("LOCK TABLE keylock_slot_events IN SHARE ROW EXCLUSIVE MODE");
    await this.requireFormatted(what, client);
    const { rows } = await client.query("SELECT slot FROM keylock_config_slots WHERE slot = $1", [slot]);
    if (rows.length === 0)
      throw new StoreError("EINVAL", `${what}: slot ${slot} is not in the cluster config`);
  }

  /** Must run after lockSlotWrites in the same transaction: the slot's next write number is read, then used. */
  private async writeEvent(client: pg.PoolClient, slot: number, kind: SlotEventKind, event: SlotEventInput) {
    const { rows } = await client.query<{ write_nr: string }>(
      "SELECT coalesce(max(write_nr), 0)::text AS write_nr FROM keylock_slot_events WHERE slot = $1",
      [slot],
    );
    const writeNr = numberFromRow(rows[0]?.write_nr, "slot write number") + 1;
    await client.query(
      `INSERT INTO keylock_slot_events (slot, kind, term, rid, time_ms, write_nr, pid, pid_start)
       VALUES ($1, $2, $3::numeric, $4::numeric, $5, $6, $7, $8)
       ON CONFLICT (slot, kind) DO UPDATE SET
         term = excluded.term, rid = excluded.rid, time_ms = excluded.time_ms, write_nr = excluded.write_nr,
         pid = excluded.pid, pid_start = excluded.pid_start`,
      [slot, kind, event.term.toString(), event.rid.toString(), event.timeMs, writeNr, event.pid ?? 0, event.pidStart ?? ""],
    );
  }
}
