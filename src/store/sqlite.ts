/**
 * The SQLite store: the `Store` contract (store.ts) in one SQLite file through better-sqlite3. It is
 * the embedded default (`keylock up`) and serves members on ONE machine: SQLite's locking works for
 * processes sharing a local file system, not across machines (use PostgreSQL for that).
 *
 * Guarantees:
 * - Durable commits: WAL journal with synchronous=FULL, so a resolved write survives power loss, not
 *   only a process crash. Every write is one transaction; a write that throws rolled back.
 * - Writes run in IMMEDIATE transactions, which take the database write lock before reading. Checks and
 *   the writes that depend on them are therefore atomic across every process using the file: format's
 *   "not yet formatted", writeElect's "no higher term in any slot", a slot's next write number.
 * - The schema is created on open, idempotently and inside an IMMEDIATE transaction (members opening
 *   the same new file at once do not race); a `keylock_meta` row records the schema version, and a
 *   file written by a newer schema version is refused rather than misread. Older files are migrated
 *   in that same transaction (v2 adds the process columns: clients' pid_start, slot events' pid and
 *   pid_start; version 1 client pids were named by the clients themselves and are reset to 0; v3 adds
 *   the clients' resume_key and claim_key of greeting v2, empty for older records; v4 adds the
 *   keylock_grant_tag_key table, empty until the first grantTagKey call). The file's directory is
 *   created if missing.
 * - The grant-tag key is one BLOB row (id 1) of keylock_grant_tag_key, made by `INSERT OR IGNORE` then read
 *   back in one IMMEDIATE transaction: of processes racing to make it, one inserts and all read its bytes.
 * - Unsigned 64-bit values (rid, term, seq high-water) are stored as TEXT of exactly 16 lowercase hex
 *   digits (the same spelling as rids everywhere else, DESIGN §6). Fixed width makes SQLite's bytewise
 *   TEXT order the unsigned numeric order, so `ORDER BY rid` and `term > ?` need no conversion, and the
 *   values read naturally in the sqlite3 shell. Millisecond times, pids, ports and write numbers are
 *   INTEGERs (all well inside 2^53).
 * - Driver errors become StoreError EIO with the driver error as `cause`.
 *
 * Relies on: better-sqlite3 being synchronous. A call holds the event loop for the duration of one small
 * transaction, including its fsync; when another process holds the write lock it waits up to
 * SQLITE_BUSY_TIMEOUT_MS (blocking this process) and then fails with EIO. Writes are rare and tiny
 * (greetings, farewells, elections, seq reservations in blocks), so this is a bounded, short stall.
 */
import { randomBytes } from "node:crypto";
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import Database from "better-sqlite3";
import { GRANT_TAG_KEY_BYTES } from "../core/grant-tags.js";
import {
  checkClientRecord,
  checkSlotEventInput,
  checkSlotEventKind,
  checkSlotNumber,
  checkU64,
  grantTagKeyFromStore,
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

export const SQLITE_SCHEMA_VERSION = 4;
/** How long a write waits for another process's write transaction before failing with EIO. */
export const SQLITE_BUSY_TIMEOUT_MS = 5000;

const U64_HEX_DIGITS = 16;

function u64ToText(value: bigint): string {
  return value.toString(16).padStart(U64_HEX_DIGITS, "0");
}

function u64FromText(text: unknown, what: string): bigint {
  if (typeof text !== "string" || !/^[0-9a-f]{16}$/.test(text)) {
    throw new StoreError("EIO", `corrupt ${what} in the SQLite store: ${String(text)}`);
  }
  return BigInt(`0x${text}`);
}

const KIND_LIST = SLOT_EVENT_KINDS.map((k) => `'${k}'`).join(", ");
const U64_CHECK = (column: string): string =>
  `CHECK (length(${column}) = 16 AND ${column} NOT GLOB '*[^0-9a-f]*')`;

/** The grant-tag key (store.ts): at most one row, GRANT_TAG_KEY_BYTES bytes. Schema version 4 on. */
const GRANT_TAG_KEY_TABLE = `
CREATE TABLE IF NOT EXISTS keylock_grant_tag_key (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  key BLOB NOT NULL CHECK (length(key) = ${GRANT_TAG_KEY_BYTES})
) STRICT;
`;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS keylock_meta (
  name TEXT PRIMARY KEY,
  value TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS keylock_config (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  cluster_id TEXT NOT NULL,
  secret_digest TEXT,
  formatted_at_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS keylock_config_slots (
  slot INTEGER PRIMARY KEY CHECK (slot BETWEEN 0 AND 14),
  host TEXT NOT NULL,
  port INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65534),
  UNIQUE (host, port)
) STRICT;
CREATE TABLE IF NOT EXISTS keylock_seq (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  high_water TEXT NOT NULL ${U64_CHECK("high_water")}
) STRICT;
CREATE TABLE IF NOT EXISTS keylock_clients (
  rid TEXT PRIMARY KEY ${U64_CHECK("rid")},
  name TEXT NOT NULL,
  address TEXT NOT NULL,
  pid INTEGER NOT NULL,
  hostname TEXT NOT NULL,
  greeted_at_ms INTEGER NOT NULL,
  pid_start TEXT NOT NULL DEFAULT '',
  resume_key TEXT NOT NULL DEFAULT '',
  claim_key TEXT NOT NULL DEFAULT ''
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS keylock_slot_events (
  slot INTEGER NOT NULL CHECK (slot BETWEEN 0 AND 14),
  kind TEXT NOT NULL CHECK (kind IN (${KIND_LIST})),
  term TEXT NOT NULL ${U64_CHECK("term")},
  rid TEXT NOT NULL ${U64_CHECK("rid")},
  time_ms INTEGER NOT NULL,
  write_nr INTEGER NOT NULL,
  pid INTEGER NOT NULL DEFAULT 0,
  pid_start TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (slot, kind)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS keylock_slot_events_term ON keylock_slot_events (term);
${GRANT_TAG_KEY_TABLE}`;

/** Version 1 → 2: the process columns. Old client pids came from the clients' greetings: not kept. */
const MIGRATE_1_TO_2 = `
ALTER TABLE keylock_clients ADD COLUMN pid_start TEXT NOT NULL DEFAULT '';
UPDATE keylock_clients SET pid = 0;
ALTER TABLE keylock_slot_events ADD COLUMN pid INTEGER NOT NULL DEFAULT 0;
ALTER TABLE keylock_slot_events ADD COLUMN pid_start TEXT NOT NULL DEFAULT '';
UPDATE keylock_meta SET value = '2' WHERE name = 'schema_version';
`;

/**
 * Version 2 → 3: greeting v2's resumption keys (docs/protocol.md). Records written before have none: such a
 * client cannot prove its identity, so it is fenced and reclaimed like one that does not come back.
 */
const MIGRATE_2_TO_3 = `
ALTER TABLE keylock_clients ADD COLUMN resume_key TEXT NOT NULL DEFAULT '';
ALTER TABLE keylock_clients ADD COLUMN claim_key TEXT NOT NULL DEFAULT '';
UPDATE keylock_meta SET value = '3' WHERE name = 'schema_version';
`;

/** Version 3 → 4: the grant-tag key's table (SCHEMA has already made it on this open; kept here for clarity). */
const MIGRATE_3_TO_4 = `${GRANT_TAG_KEY_TABLE}
UPDATE keylock_meta SET value = '4' WHERE name = 'schema_version';
`;

interface ConfigRow {
  cluster_id: string;
  secret_digest: string | null;
  formatted_at_ms: number;
}
interface SlotRow {
  slot: number;
  host: string;
  port: number;
}
interface ClientRow {
  rid: string;
  name: string;
  address: string;
  pid: number;
  pid_start: string;
  hostname: string;
  greeted_at_ms: number;
  resume_key: string;
  claim_key: string;
}
interface EventRow {
  slot: number;
  kind: string;
  term: string;
  rid: string;
  time_ms: number;
  write_nr: number;
  pid: number;
  pid_start: string;
}

function clientFromRow(row: ClientRow): MountedClientRecord {
  return {
    rid: u64FromText(row.rid, "client rid"),
    name: row.name,
    address: row.address,
    pid: row.pid,
    pidStart: row.pid_start,
    hostname: row.hostname,
    greetedAtMs: row.greeted_at_ms,
    resumeKey: row.resume_key,
    claimKey: row.claim_key,
  };
}

export class SqliteStore implements Store {
  readonly url: string;
  readonly path: string;
  private db: Database.Database | null;
  private formatted = false;

  private readonly statements: {
    readConfig: Database.Statement<[], ConfigRow>;
    readConfigSlots: Database.Statement<[], SlotRow>;
    insertConfig: Database.Statement<[string, string | null, number]>;
    insertConfigSlot: Database.Statement<[number, string, number]>;
    insertSeq: Database.Statement<[]>;
    readSeq: Database.Statement<[], { high_water: string }>;
    writeSeq: Database.Statement<[string]>;
    insertClient: Database.Statement<[string, string, string, number, string, string, number, string, string]>;
    deleteClient: Database.Statement<[string]>;
    getClient: Database.Statement<[string], ClientRow>;
    listClients: Database.Statement<[], ClientRow>;
    readEvents: Database.Statement<[], EventRow>;
    slotWriteNr: Database.Statement<[number], { write_nr: number | null }>;
    upsertEvent: Database.Statement<[number, string, string, string, number, number, number, string]>;
    higherTerm: Database.Statement<[string], { found: number }>;
    configuredSlot: Database.Statement<[number], { slot: number }>;
    readGrantTagKey: Database.Statement<[], { key: unknown }>;
    insertGrantTagKey: Database.Statement<[Buffer]>;
  };

  /** Open (creating if needed) the SQLite store at `path`; throws StoreError EIO if it cannot. */
  static open(path: string): SqliteStore {
    const absolute = resolve(path);
    let db: Database.Database | undefined;
    try {
      mkdirSync(dirname(absolute), { recursive: true, mode: 0o700 });
      // Owner-only (DESIGN §9): SQLite gives the -wal and -shm files the database file's permissions.
      closeSync(openSync(absolute, "a", 0o600));
      for (const file of [absolute, `${absolute}-wal`, `${absolute}-shm`]) {
        if (existsSync(file) && (statSync(file).mode & 0o077) !== 0) chmodSync(file, 0o600); // made by an earlier version
      }
      const opened = new Database(absolute, { timeout: SQLITE_BUSY_TIMEOUT_MS });
      db = opened;
      db.pragma(`busy_timeout = ${SQLITE_BUSY_TIMEOUT_MS}`);
      const mode = db.pragma("journal_mode = WAL", { simple: true });
      if (mode !== "wal") throw new Error(`could not switch to WAL journal mode (got ${String(mode)})`);
      db.pragma("synchronous = FULL");
      db.transaction(() => {
        opened.exec(SCHEMA);
        opened
          .prepare("INSERT OR IGNORE INTO keylock_meta (name, value) VALUES ('schema_version', ?)")
          .run(String(SQLITE_SCHEMA_VERSION));
        const readVersion = (): { value: string } | undefined =>
          opened.prepare("SELECT value FROM keylock_meta WHERE name = 'schema_version'").get() as { value: string } | undefined;
        if (readVersion()?.value === "1") opened.exec(MIGRATE_1_TO_2);
        if (readVersion()?.value === "2") opened.exec(MIGRATE_2_TO_3);
        if (readVersion()?.value === "3") opened.exec(MIGRATE_3_TO_4);
        const row = readVersion();
        const version = Number(row?.value);
        if (version !== SQLITE_SCHEMA_VERSION) {
          throw new StoreError(
            "EINVAL",
            `${absolute} has store schema version ${row?.value}; this keylock reads version ${SQLITE_SCHEMA_VERSION}`,
          );
        }
      }).immediate();
      return new SqliteStore(absolute, db);
    } catch (error) {
      try {
        db?.close();
      } catch {
        // Already failing to open; the close error adds nothing to the open error reported below.
      }
      throw toStoreError(`opening SQLite store ${absolute}`, error);
    }
  }

  private constructor(path: string, db: Database.Database) {
    this.path = path;
    this.url = `sqlite:${path}`;
    this.db = db;
    this.statements = {
      readConfig: db.prepare<[], ConfigRow>(
        "SELECT cluster_id, secret_digest, formatted_at_ms FROM keylock_config WHERE id = 1",
      ),
      readConfigSlots: db.prepare<[], SlotRow>(
        "SELECT slot, host, port FROM keylock_config_slots ORDER BY slot",
      ),
      insertConfig: db.prepare<[string, string | null, number]>(
        "INSERT INTO keylock_config (id, cluster_id, secret_digest, formatted_at_ms) VALUES (1, ?, ?, ?)",
      ),
      insertConfigSlot: db.prepare<[number, string, number]>(
        "INSERT INTO keylock_config_slots (slot, host, port) VALUES (?, ?, ?)",
      ),
      insertSeq: db.prepare<[]>(
        `INSERT OR IGNORE INTO keylock_seq (id, high_water) VALUES (1, '${u64ToText(0n)}')`,
      ),
      readSeq: db.prepare<[], { high_water: string }>("SELECT high_water FROM keylock_seq WHERE id = 1"),
      writeSeq: db.prepare<[string]>("UPDATE keylock_seq SET high_water = ? WHERE id = 1"),
      insertClient: db.prepare<[string, string, string, number, string, string, number, string, string]>(
        "INSERT OR IGNORE INTO keylock_clients (rid, name, address, pid, pid_start, hostname, greeted_at_ms, resume_key, claim_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
      ),
      deleteClient: db.prepare<[string]>("DELETE FROM keylock_clients WHERE rid = ?"),
      getClient: db.prepare<[string], ClientRow>("SELECT * FROM keylock_clients WHERE rid = ?"),
      listClients: db.prepare<[], ClientRow>("SELECT * FROM keylock_clients ORDER BY rid"),
      readEvents: db.prepare<[], EventRow>("SELECT * FROM keylock_slot_events ORDER BY slot, write_nr"),
      slotWriteNr: db.prepare<[number], { write_nr: number | null }>(
        "SELECT max(write_nr) AS write_nr FROM keylock_slot_events WHERE slot = ?",
      ),
      upsertEvent: db.prepare<[number, string, string, string, number, number, number, string]>(
        `INSERT INTO keylock_slot_events (slot, kind, term, rid, time_ms, write_nr, pid, pid_start) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (slot, kind) DO UPDATE SET
           term = excluded.term, rid = excluded.rid, time_ms = excluded.time_ms, write_nr = excluded.write_nr,
           pid = excluded.pid, pid_start = excluded.pid_start`,
      ),
      higherTerm: db.prepare<[string], { found: number }>(
        "SELECT 1 AS found FROM keylock_slot_events WHERE term > ? LIMIT 1",
      ),
      configuredSlot: db.prepare<[number], { slot: number }>(
        "SELECT slot FROM keylock_config_slots WHERE slot = ?",
      ),
      readGrantTagKey: db.prepare<[], { key: unknown }>("SELECT key FROM keylock_grant_tag_key WHERE id = 1"),
      insertGrantTagKey: db.prepare<[Buffer]>(
        "INSERT OR IGNORE INTO keylock_grant_tag_key (id, key) VALUES (1, ?)",
      ),
    };
  }

  /** Run `fn` against the open database; errors become StoreErrors; the result comes as a promise. */
  private op<T>(what: string, fn: (db: Database.Database) => T): Promise<T> {
    try {
      if (this.db === null) throw new StoreError("EIO", `${what}: the store is closed`);
      return Promise.resolve(fn(this.db));
    } catch (error) {
      return Promise.reject(toStoreError(`${what} (${this.url})`, error));
    }
  }

  /** Run `fn` in an IMMEDIATE transaction (write lock taken before the first read). */
  private write<T>(what: string, fn: (db: Database.Database) => T): Promise<T> {
    return this.op(what, (db) => db.transaction(() => fn(db)).immediate());
  }

  /** Throws ENOTFORMATTED unless a config exists. Formatting is permanent, so a yes is remembered. */
  private requireFormatted(what: string): void {
    if (this.formatted) return;
    if (this.statements.readConfig.get() === undefined) {
      throw new StoreError("ENOTFORMATTED", `${what}: the store ${this.url} is not formatted`);
    }
    this.formatted = true;
  }

  format(config: ClusterConfig): Promise<void> {
    return this.write("format", () => {
      const valid = validateClusterConfig(config);
      const existing = this.statements.readConfig.get();
      if (existing !== undefined) {
        throw new StoreError("EEXIST", `the store is already formatted for cluster ${existing.cluster_id}`);
      }
      this.statements.insertConfig.run(valid.clusterId, valid.secretDigest, valid.formattedAtMs);
      for (const s of valid.slots) this.statements.insertConfigSlot.run(s.slot, s.host, s.port);
      this.statements.insertSeq.run();
    });
  }

  readConfig(): Promise<ClusterConfig | null> {
    return this.op("readConfig", (db) =>
      db.transaction((): ClusterConfig | null => {
        const row = this.statements.readConfig.get();
        if (row === undefined) return null;
        const slots = this.statements.readConfigSlots
          .all()
          .map((s) => ({ slot: s.slot, host: s.host, port: s.port }));
        return {
          clusterId: row.cluster_id,
          slots,
          secretDigest: row.secret_digest,
          formattedAtMs: row.formatted_at_ms,
        };
      })(),
    );
  }

  readSeqHighWater(): Promise<bigint> {
    return this.op("readSeqHighWater", () => {
      const row = this.statements.readSeq.get();
      return row === undefined ? 0n : u64FromText(row.high_water, "seq high-water");
    });
  }

  raiseSeqHighWater(atLeast: bigint): Promise<bigint> {
    return this.write("raiseSeqHighWater", () => {
      const value = checkU64(atLeast, "seq high-water");
      this.requireFormatted("raiseSeqHighWater");
      const row = this.statements.readSeq.get();
      const current = row === undefined ? 0n : u64FromText(row.high_water, "seq high-water");
      if (value <= current) return current;
      this.statements.writeSeq.run(u64ToText(value));
      return value;
    });
  }

  insertClient(record: MountedClientRecord): Promise<void> {
    return this.write("insertClient", () => {
      const r = checkClientRecord(record);
      this.requireFormatted("insertClient");
      // OR IGNORE: an existing rid keeps its first record and the insert succeeds (B21).
      this.statements.insertClient.run(u64ToText(r.rid), r.name, r.address, r.pid, r.pidStart, r.hostname, r.greetedAtMs, r.resumeKey, r.claimKey);
    });
  }

  deleteClient(rid: bigint): Promise<void> {
    return this.write("deleteClient", () => {
      const key = u64ToText(checkU64(rid, "client rid"));
      this.requireFormatted("deleteClient");
      this.statements.deleteClient.run(key);
    });
  }

  getClient(rid: bigint): Promise<MountedClientRecord | null> {
    return this.op("getClient", () => {
      const row = this.statements.getClient.get(u64ToText(checkU64(rid, "client rid")));
      return row === undefined ? null : clientFromRow(row);
    });
  }

  listClients(): Promise<MountedClientRecord[]> {
    return this.op("listClients", () => this.statements.listClients.all().map(clientFromRow));
  }

  readSlots(): Promise<SlotRecord[]> {
    return this.op("readSlots", () => {
      const out: SlotRecord[] = [];
      for (const row of this.statements.readEvents.all()) {
        let record = out[out.length - 1];
        if (record === undefined || record.slot !== row.slot) {
          record = { slot: row.slot, events: {} };
          out.push(record);
        }
        record.events[checkSlotEventKind(row.kind)] = {
          term: u64FromText(row.term, "slot event term"),
          rid: u64FromText(row.rid, "slot event rid"),
          timeMs: row.time_ms,
          writeNr: row.write_nr,
          ...(row.pid === 0 ? {} : { pid: row.pid, pidStart: row.pid_start }),
        };
      }
      return out;
    });
  }

  writeSlotEvent(slot: number, kind: SlotEventKind, event: SlotEventInput): Promise<void> {
    return this.write("writeSlotEvent", () => {
      const validKind = checkSlotEventKind(kind);
      this.writeEvent(slot, validKind, this.checkSlotWrite("writeSlotEvent", slot, event));
    });
  }

  writeElect(slot: number, event: SlotEventInput): Promise<boolean> {
    return this.write("writeElect", () => {
      const valid = this.checkSlotWrite("writeElect", slot, event);
      // Inside the IMMEDIATE transaction no other process can write between this check and the write.
      if (this.statements.higherTerm.get(u64ToText(valid.term)) !== undefined) return false;
      this.writeEvent(slot, "ELECT", valid);
      return true;
    });
  }

  grantTagKey(): Promise<Uint8Array> {
    return this.op("grantTagKey", (db) => {
      const where = `the SQLite store ${this.url}`;
      const existing = this.statements.readGrantTagKey.get();
      if (existing !== undefined) return grantTagKeyFromStore(existing.key, where);
      // Not made yet: make it under the write lock. OR IGNORE: another process may have made it since the read.
      return db
        .transaction(() => {
          this.requireFormatted("grantTagKey");
          this.statements.insertGrantTagKey.run(randomBytes(GRANT_TAG_KEY_BYTES));
          return grantTagKeyFromStore(this.statements.readGrantTagKey.get()?.key, where);
        })
        .immediate();
    });
  }

  close(): Promise<void> {
    const db = this.db;
    this.db = null;
    if (db === null) return Promise.resolve();
    try {
      db.close();
      return Promise.resolve();
    } catch (error) {
      return Promise.reject(toStoreError(`closing ${this.url}`, error));
    }
  }

  private checkSlotWrite(what: string, slot: number, event: SlotEventInput): SlotEventInput {
    const valid = checkSlotEventInput(event);
    checkSlotNumber(slot);
    this.requireFormatted(what);
    if (this.statements.configuredSlot.get(slot) === undefined) {
      throw new StoreError("EINVAL", `${what}: slot ${slot} is not in the cluster config`);
    }
    return valid;
  }

  /** Must run inside a write transaction: the slot's next write number is read, then used. */
  private writeEvent(slot: number, kind: SlotEventKind, event: SlotEventInput): void {
    const last = this.statements.slotWriteNr.get(slot)?.write_nr ?? 0;
    const writeNr = last + 1;
    this.statements.upsertEvent.run(
      slot,
      kind,
      u64ToText(event.term),
      u64ToText(event.rid),
      event.timeMs,
      writeNr,
      event.pid ?? 0,
      event.pidStart ?? "",
    );
  }
}
