/**
 * The SQLite store passes the shared conformance suite, each test on a new file in a temporary
 * directory (removed afterwards); the second instance is `openStore(store.url)` on the same file.
 * Also: the file's settings (WAL, synchronous=FULL), directory creation, schema-version refusal,
 * and writes from two processes (two connections truly in parallel).
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import Database from "better-sqlite3";
import { openStore } from "../../src/store/open.js";
import { SqliteStore } from "../../src/store/sqlite.js";
import { StoreError } from "../../src/store/store.js";
import { config, storeConformance } from "./conformance.js";

const execFileAsync = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), "keylock-sqlite-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));
let fileNr = 0;
const nextPath = (): string => join(dir, `store-${++fileNr}.db`);

storeConformance("sqlite", () => openStore(`sqlite:${nextPath()}`));

test("sqlite store - the file uses WAL and synchronous=FULL, schema version 4", async () => {
  const store = await openStore(`sqlite:${nextPath()}`);
  assert.ok(store instanceof SqliteStore);
  await store.close();
  const db = new Database(store.path, { readonly: true });
  try {
    assert.equal(db.pragma("journal_mode", { simple: true }), "wal");
    assert.deepEqual(db.prepare("SELECT value FROM keylock_meta WHERE name = 'schema_version'").get(), {
      value: "4",
    });
  } finally {
    db.close();
  }
  // synchronous is per connection: check the store's own setting through a fresh store.
  const again = SqliteStore.open(store.path);
  const raw = (again as unknown as { db: Database.Database }).db;
  assert.equal(raw.pragma("synchronous", { simple: true }), 2, "FULL");
  assert.equal(raw.pragma("busy_timeout", { simple: true }), 5000);
  await again.close();
});

test("sqlite store - the file's directory is created and the url holds the absolute path", async () => {
  const path = join(dir, "nested", "deeper", "store.db");
  const store = await openStore(`sqlite:${relative(process.cwd(), path)}`);
  assert.ok(existsSync(path));
  assert.equal(store.url, `sqlite:${path}`);
  await store.close();
});

test("sqlite store - a file written by a newer schema version is refused", async () => {
  const path = nextPath();
  await (await openStore(`sqlite:${path}`)).close();
  const db = new Database(path);
  db.prepare("UPDATE keylock_meta SET value = '99' WHERE name = 'schema_version'").run();
  db.close();
  await assert.rejects(openStore(`sqlite:${path}`), (e: unknown) => {
    assert.ok(e instanceof StoreError);
    assert.match(e.message, /schema version 99/);
    return true;
  });
});

test("sqlite store - a version 1 file opens, migrated: process columns added, client-named pids dropped", async () => {
  const path = nextPath();
  const db = new Database(path);
  db.exec(`
    CREATE TABLE keylock_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
    CREATE TABLE keylock_config (id INTEGER PRIMARY KEY CHECK (id = 1), cluster_id TEXT NOT NULL, secret_digest TEXT,
      formatted_at_ms INTEGER NOT NULL) STRICT;
    CREATE TABLE keylock_config_slots (slot INTEGER PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL, UNIQUE (host, port)) STRICT;
    CREATE TABLE keylock_seq (id INTEGER PRIMARY KEY CHECK (id = 1), high_water TEXT NOT NULL) STRICT;
    CREATE TABLE keylock_clients (rid TEXT PRIMARY KEY, name TEXT NOT NULL, address TEXT NOT NULL, pid INTEGER NOT NULL,
      hostname TEXT NOT NULL, greeted_at_ms INTEGER NOT NULL) STRICT, WITHOUT ROWID;
    CREATE TABLE keylock_slot_events (slot INTEGER NOT NULL, kind TEXT NOT NULL, term TEXT NOT NULL, rid TEXT NOT NULL,
      time_ms INTEGER NOT NULL, write_nr INTEGER NOT NULL, PRIMARY KEY (slot, kind)) STRICT, WITHOUT ROWID;
    INSERT INTO keylock_meta VALUES ('schema_version', '1');
    INSERT INTO keylock_config VALUES (1, 'old-cluster', NULL, 5);
    INSERT INTO keylock_config_slots VALUES (0, '127.0.0.1', 7411);
    INSERT INTO keylock_seq VALUES (1, '000000000000004d');
    INSERT INTO keylock_clients VALUES ('0000000000000009', 'old', '127.0.0.1:5000', 4242, 'h', 6);
    INSERT INTO keylock_slot_events VALUES (0, 'ELECT', '0000000000000003', '0000000000000008', 7, 1);
  `);
  db.close();
  const store = await openStore(`sqlite:${path}`);
  assert.equal((await store.readConfig())?.clusterId, "old-cluster");
  assert.equal(await store.readSeqHighWater(), 77n);
  assert.deepEqual(await store.listClients(), [
    { rid: 9n, name: "old", address: "127.0.0.1:5000", pid: 0, pidStart: "", hostname: "h", greetedAtMs: 6, resumeKey: "", claimKey: "" },
  ]);
  assert.deepEqual(await store.readSlots(), [{ slot: 0, events: { ELECT: { term: 3n, rid: 8n, timeMs: 7, writeNr: 1 } } }]);
  await store.writeSlotEvent(0, "BEGIN", { term: 4n, rid: 8n, timeMs: 8, pid: 5, pidStart: "h m b 1" });
  await store.close();
  const again = await openStore(`sqlite:${path}`);
  assert.deepEqual((await again.readSlots())[0]?.events.BEGIN, { term: 4n, rid: 8n, timeMs: 8, writeNr: 2, pid: 5, pidStart: "h m b 1" });
  await again.close();
  const raw = new Database(path, { readonly: true });
  assert.deepEqual(raw.prepare("SELECT value FROM keylock_meta WHERE name = 'schema_version'").get(), { value: "4" });
  raw.close();
});

test("sqlite store - a version 3 file opens, migrated: the grant-tag key table added, the key made on demand", async () => {
  const path = nextPath();
  const first = await openStore(`sqlite:${path}`);
  await first.format(config([0]));
  await first.raiseSeqHighWater(77n);
  await first.close();
  // A version 3 file is this schema without the grant-tag key table.
  const db = new Database(path);
  db.exec(
    "DROP TABLE keylock_grant_tag_key; UPDATE keylock_meta SET value = '3' WHERE name = 'schema_version';",
  );
  db.close();
  const store = await openStore(`sqlite:${path}`);
  assert.equal((await store.readConfig())?.clusterId, "cluster-test");
  assert.equal(await store.readSeqHighWater(), 77n);
  const key = await store.grantTagKey();
  assert.equal(key.length, 16);
  await store.close();
  const again = await openStore(`sqlite:${path}`);
  assert.deepEqual(await again.grantTagKey(), key);
  await again.close();
  const raw = new Database(path, { readonly: true });
  assert.deepEqual(raw.prepare("SELECT value FROM keylock_meta WHERE name = 'schema_version'").get(), {
    value: "4",
  });
  assert.deepEqual(raw.prepare("SELECT id, length(key) AS bytes FROM keylock_grant_tag_key").all(), [
    { id: 1, bytes: 16 },
  ]);
  raw.close();
});

test("sqlite store - the grant-tag key table holds one key of 16 bytes (the schema refuses anything else)", async () => {
  const path = nextPath();
  const store = await openStore(`sqlite:${path}`);
  await store.format(config([0]));
  const key = await store.grantTagKey();
  await store.close();
  const db = new Database(path);
  try {
    assert.throws(
      () => db.prepare("INSERT INTO keylock_grant_tag_key (id, key) VALUES (2, ?)").run(Buffer.alloc(16)),
      /CHECK/,
    );
    assert.throws(
      () => db.prepare("UPDATE keylock_grant_tag_key SET key = ? WHERE id = 1").run(Buffer.alloc(15)),
      /CHECK/,
    );
    assert.deepEqual(
      new Uint8Array(db.prepare<[], { key: Buffer }>("SELECT key FROM keylock_grant_tag_key").get()!.key),
      key,
    );
  } finally {
    db.close();
  }
});

test("sqlite store - an unopenable path is EIO with the driver error as cause", async () => {
  const path = join(dir, "a-directory.db");
  await (await openStore(`sqlite:${join(path, "inner.db")}`)).close();
  await assert.rejects(openStore(`sqlite:${path}`), (e: unknown) => {
    assert.ok(e instanceof StoreError);
    assert.equal(e.code, "EIO");
    assert.ok(e.cause instanceof Error);
    return true;
  });
});

// Two processes, two connections, really in parallel: the IMMEDIATE transactions must serialize them.
const CHILD_SOURCE = `
const data = JSON.parse(process.argv[1]);
const { SqliteStore } = await import(data.module);
const store = SqliteStore.open(data.path);
const kinds = ["BEGIN", "TERM", "ELECT", "FENCE", "STOP", "END"];
let elected = 0;
for (let i = 0; i < data.writes; i++) {
  await store.writeSlotEvent(0, kinds[i % kinds.length], { term: BigInt(i), rid: 1n, timeMs: i });
  const rid = BigInt(data.ridBase + i);
  await store.insertClient({ rid, name: "w", address: "a", pid: 1, pidStart: "h m b 1", hostname: "h", greetedAtMs: 1, resumeKey: "", claimKey: "" });
  const event = { term: BigInt(data.termBase + i), rid: 1n, timeMs: i };
  if (await store.writeElect(data.slot, event)) elected++;
}
await store.close();
process.stdout.write(String(elected));
`;

// Processes racing to make the grant-tag key: each opens the file and asks at once (after a common start time).
const KEY_CHILD_SOURCE = `
const data = JSON.parse(process.argv[1]);
const { SqliteStore } = await import(data.module);
const store = SqliteStore.open(data.path);
await new Promise((resolve) => setTimeout(resolve, Math.max(0, data.startAtMs - Date.now())));
const key = await store.grantTagKey();
await store.close();
process.stdout.write(Buffer.from(key).toString("hex"));
`;

async function runChild(data: Record<string, unknown>): Promise<number> {
  const args = ["--import", "tsx", "--input-type=module", "-e", CHILD_SOURCE, JSON.stringify(data)];
  const { stdout } = await execFileAsync(process.execPath, args, { timeout: 60_000 });
  return Number(stdout);
}

test("sqlite store - processes racing to make the grant-tag key all get the same key", async () => {
  const path = nextPath();
  const store = await openStore(`sqlite:${path}`);
  await store.format(config([0]));
  const module = pathToFileURL(fileURLToPath(new URL("../../src/store/sqlite.ts", import.meta.url))).href;
  const data = JSON.stringify({ module, path, startAtMs: Date.now() + 2500 });
  const args = ["--import", "tsx", "--input-type=module", "-e", KEY_CHILD_SOURCE, data];
  const keys = await Promise.all(
    Array.from(
      { length: 4 },
      async () => (await execFileAsync(process.execPath, args, { timeout: 60_000 })).stdout,
    ),
  );
  assert.match(keys[0]!, /^[0-9a-f]{32}$/);
  assert.deepEqual(
    keys,
    Array.from({ length: 4 }, () => keys[0]),
    "one key for every process",
  );
  assert.equal(Buffer.from(await store.grantTagKey()).toString("hex"), keys[0]);
  await store.close();
});

test("sqlite store - two processes writing one file: distinct write numbers, no lost inserts", async () => {
  const path = nextPath();
  const store = await openStore(`sqlite:${path}`);
  await store.format(config([0, 1, 2]));
  const module = pathToFileURL(fileURLToPath(new URL("../../src/store/sqlite.ts", import.meta.url))).href;
  const writes = 50;
  const [highElected, lowElected] = await Promise.all([
    runChild({ module, path, writes, ridBase: 1_000, slot: 1, termBase: 1_000_000 }),
    runChild({ module, path, writes, ridBase: 2_000, slot: 2, termBase: 0 }),
  ]);
  assert.equal(highElected, writes, "the process holding the highest term always wins its ELECT");
  assert.ok(lowElected !== undefined && lowElected >= 0 && lowElected <= writes);
  const slot0 = (await store.readSlots()).find((s) => s.slot === 0);
  const writeNrs = Object.values(slot0?.events ?? {}).map((e) => e.writeNr);
  assert.equal(new Set(writeNrs).size, writeNrs.length);
  assert.equal(Math.max(...writeNrs), 2 * writes, "every write to slot 0 got its own write number");
  assert.equal((await store.listClients()).length, 2 * writes);
  await store.close();
});
