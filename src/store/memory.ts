/**
 * The memory store: the `Store` contract (store.ts) on plain maps, for the deterministic simulator and
 * unit tests. Same semantics and the same refusals as the SQLite and PostgreSQL stores; it passes the
 * same conformance suite.
 *
 * Guarantees:
 * - "Durable" means "held by the MemoryDatabase": several MemoryStore instances opened on one
 *   MemoryDatabase see each other's writes, and a new instance on the same database after `close`
 *   (a simulated member restart) finds everything that was written. The simulator models a store that
 *   survives member crashes by keeping the MemoryDatabase and dropping the instance.
 * - Every operation is applied synchronously inside the call, before its promise is returned, so each
 *   one is atomic with respect to every other (there is no await between a check and its write; this is
 *   how writeElect's check-and-write is atomic, and why concurrent inserts and deletes are never lost,
 *   B25). Results are delivered through promises like the other engines.
 * - Records go in and come out as copies: a caller mutating a returned object changes nothing stored.
 * - The grant-tag key's bytes come from the database's `randomBytes`: crypto.randomBytes unless the
 *   database was given another source (a seeded PRNG, for a simulator run that replays exactly).
 *
 * Relies on: nothing but the shared validation in store.ts. bigints are kept as bigints.
 */
import { randomBytes as cryptoRandomBytes } from "node:crypto";
import { GRANT_TAG_KEY_BYTES } from "../core/grant-tags.js";
import {
  checkClientRecord,
  checkSlotEventInput,
  checkSlotEventKind,
  checkSlotNumber,
  checkU64,
  grantTagKeyFromStore,
  StoreError,
  validateClusterConfig,
  type ClusterConfig,
  type MountedClientRecord,
  type SlotEvent,
  type SlotEventInput,
  type SlotEventKind,
  type SlotRecord,
  type Store,
} from "./store.js";

interface MemorySlot {
  writeNr: number;
  events: Map<SlotEventKind, SlotEvent>;
}

/** The shared state behind one or more MemoryStore instances: what a SQLite file or a database is. */
export class MemoryDatabase {
  config: ClusterConfig | null = null;
  seqHighWater = 0n;
  /** Made by the first grantTagKey call (store.ts); never handed out except as a copy. */
  grantTagKey: Uint8Array | null = null;
  readonly clients = new Map<bigint, MountedClientRecord>();
  readonly slots = new Map<number, MemorySlot>();
  /** Where the grant-tag key's bytes come from. */
  readonly randomBytes: (size: number) => Uint8Array;

  constructor(options: { randomBytes?: (size: number) => Uint8Array } = {}) {
    this.randomBytes = options.randomBytes ?? cryptoRandomBytes;
  }
}

function copyConfig(config: ClusterConfig): ClusterConfig {
  return { ...config, slots: config.slots.map((s) => ({ ...s })) };
}

export class MemoryStore implements Store {
  readonly url = "memory:";
  readonly database: MemoryDatabase;
  private closed = false;

  /** A new instance on `database`, or on a new empty database. */
  constructor(database: MemoryDatabase = new MemoryDatabase()) {
    this.database = database;
  }

  /** Run `fn` now; its result or its error is delivered as a promise. */
  private op<T>(what: string, fn: (db: MemoryDatabase) => T): Promise<T> {
    try {
      if (this.closed) throw new StoreError("EIO", `${what}: the store is closed`);
      return Promise.resolve(fn(this.database));
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }

  private requireFormatted(db: MemoryDatabase, what: string): ClusterConfig {
    if (db.config === null) throw new StoreError("ENOTFORMATTED", `${what}: the store is not formatted`);
    return db.config;
  }

  format(config: ClusterConfig): Promise<void> {
    return this.op("format", (db) => {
      const valid = validateClusterConfig(config);
      if (db.config !== null) {
        throw new StoreError("EEXIST", `the store is already formatted for cluster ${db.config.clusterId}`);
      }
      db.config = valid;
    });
  }

  readConfig(): Promise<ClusterConfig | null> {
    return this.op("readConfig", (db) => (db.config === null ? null : copyConfig(db.config)));
  }

  readSeqHighWater(): Promise<bigint> {
    return this.op("readSeqHighWater", (db) => db.seqHighWater);
  }

  raiseSeqHighWater(atLeast: bigint): Promise<bigint> {
    return this.op("raiseSeqHighWater", (db) => {
      const value = checkU64(atLeast, "seq high-water");
      this.requireFormatted(db, "raiseSeqHighWater");
      if (value > db.seqHighWater) db.seqHighWater = value;
      return db.seqHighWater;
    });
  }

  insertClient(record: MountedClientRecord): Promise<void> {
    return this.op("insertClient", (db) => {
      const valid = checkClientRecord(record);
      this.requireFormatted(db, "insertClient");
      if (!db.clients.has(valid.rid)) db.clients.set(valid.rid, valid); // existing rid: keep the first (B21)
    });
  }

  deleteClient(rid: bigint): Promise<void> {
    return this.op("deleteClient", (db) => {
      const key = checkU64(rid, "client rid");
      this.requireFormatted(db, "deleteClient");
      db.clients.delete(key);
    });
  }

  getClient(rid: bigint): Promise<MountedClientRecord | null> {
    return this.op("getClient", (db) => {
      const record = db.clients.get(checkU64(rid, "client rid"));
      return record === undefined ? null : { ...record };
    });
  }

  listClients(): Promise<MountedClientRecord[]> {
    return this.op("listClients", (db) =>
      [...db.clients.values()]
        .sort((a, b) => (a.rid < b.rid ? -1 : a.rid > b.rid ? 1 : 0))
        .map((r) => ({ ...r })),
    );
  }

  readSlots(): Promise<SlotRecord[]> {
    return this.op("readSlots", (db) =>
      [...db.slots.entries()]
        .filter(([, s]) => s.events.size > 0)
        .sort(([a], [b]) => a - b)
        .map(([slot, s]) => {
          const events: SlotRecord["events"] = {};
          for (const [kind, event] of s.events) events[kind] = { ...event };
          return { slot, events };
        }),
    );
  }

  writeSlotEvent(slot: number, kind: SlotEventKind, event: SlotEventInput): Promise<void> {
    return this.op("writeSlotEvent", (db) => {
      const validKind = checkSlotEventKind(kind);
      this.write(db, slot, validKind, this.checkSlotWrite(db, "writeSlotEvent", slot, event));
    });
  }

  writeElect(slot: number, event: SlotEventInput): Promise<boolean> {
    return this.op("writeElect", (db) => {
      const valid = this.checkSlotWrite(db, "writeElect", slot, event);
      for (const s of db.slots.values()) {
        for (const other of s.events.values()) if (other.term > valid.term) return false;
      }
      this.write(db, slot, "ELECT", valid);
      return true;
    });
  }

  grantTagKey(): Promise<Uint8Array> {
    return this.op("grantTagKey", (db) => {
      this.requireFormatted(db, "grantTagKey");
      // Synchronous check-and-set: of racing first calls, the first one creates the key for all.
      db.grantTagKey ??= grantTagKeyFromStore(db.randomBytes(GRANT_TAG_KEY_BYTES), "the memory store");
      return new Uint8Array(db.grantTagKey);
    });
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  private checkSlotWrite(
    db: MemoryDatabase,
    what: string,
    slot: number,
    event: SlotEventInput,
  ): SlotEventInput {
    const valid = checkSlotEventInput(event);
    checkSlotNumber(slot);
    const config = this.requireFormatted(db, what);
    if (!config.slots.some((s) => s.slot === slot)) {
      throw new StoreError("EINVAL", `${what}: slot ${slot} is not in the cluster config`);
    }
    return valid;
  }

  /** Set one event of a slot already checked by checkSlotWrite; the slot's write number increments. */
  private write(db: MemoryDatabase, slot: number, kind: SlotEventKind, event: SlotEventInput): void {
    let record = db.slots.get(slot);
    if (record === undefined) {
      record = { writeNr: 0, events: new Map() };
      db.slots.set(slot, record);
    }
    record.writeNr += 1;
    record.events.set(kind, { ...event, writeNr: record.writeNr });
  }
}
