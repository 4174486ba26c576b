/**
 * The PostgreSQL store passes the shared conformance suite against the server at 127.0.0.1:5432
 * (trust auth, user postgres). Each run creates a scratch database `keylock_test_<random hex>`, gives
 * every test an empty `public` schema in it, and drops the database afterwards (leftover connections
 * terminated first). If the server cannot be reached within 2 s, every test is skipped with the reason
 * — unless CI=true, where an unreachable server is a failure.
 * URL redaction is tested here too; it needs no server.
 */
import { after, test } from "node:test";
import assert from "node:assert/strict";
import pg from "pg";
import { openStore } from "../../src/store/open.js";
import { PostgresStore } from "../../src/store/postgres.js";
import { parseStoreUrl, StoreError } from "../../src/store/store.js";
import { config, storeConformance } from "./conformance.js";
import { reportUnreachable, scratchDatabase, withPgAdmin } from "../support/postgres.js";

const CONNECT_TIMEOUT_MS = 2000;
const database = await scratchDatabase("store");
const unreachable = "unreachable" in database ? database.unreachable : null;
const scratchUrl = "url" in database ? database.url : "";
let resetClient: pg.Client | null = null;

if (unreachable !== null) {
  reportUnreachable(unreachable, "store conformance (postgres) - the PostgreSQL server is reachable");
  storeConformance("postgres", () => Promise.reject(new Error(unreachable)), { skip: unreachable });
} else {
  after(async () => {
    await resetClient?.end();
    if ("drop" in database) await database.drop();
  });
  storeConformance("postgres", async () => {
    // Every test starts from an empty database: drop everything the previous test created.
    if (resetClient === null) {
      resetClient = new pg.Client({
        connectionString: scratchUrl,
        connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      });
      resetClient.on("error", () => {}); // surfaces on the next query
      await resetClient.connect();
    }
    await resetClient.query("DROP SCHEMA public CASCADE; CREATE SCHEMA public;");
    return openStore(scratchUrl);
  });

  test("postgres store - the schema records its version and a newer one is refused", async () => {
    const store = await openStore(scratchUrl);
    await store.close();
    await withPgAdmin(scratchUrl, async (c) => {
      const { rows } = await c.query("SELECT value FROM keylock_meta WHERE name = 'schema_version'");
      assert.deepEqual(rows, [{ value: "4" }]);
      await c.query("UPDATE keylock_meta SET value = '99' WHERE name = 'schema_version'");
    });
    await assert.rejects(openStore(scratchUrl), /schema version 99/);
    await withPgAdmin(scratchUrl, (c) =>
      c.query("UPDATE keylock_meta SET value = '4' WHERE name = 'schema_version'"),
    );
  });

  test("postgres store - a version 1 database opens, migrated: process columns added, client-named pids dropped", async () => {
    await withPgAdmin(scratchUrl, async (c) => {
      await c.query("DROP SCHEMA public CASCADE; CREATE SCHEMA public;");
      await c.query(`
        CREATE TABLE keylock_meta (name text PRIMARY KEY, value text NOT NULL);
        CREATE TABLE keylock_config (id smallint PRIMARY KEY CHECK (id = 1), cluster_id text NOT NULL,
          secret_digest text, formatted_at_ms bigint NOT NULL);
        CREATE TABLE keylock_config_slots (slot smallint PRIMARY KEY, host text NOT NULL, port integer NOT NULL, UNIQUE (host, port));
        CREATE TABLE keylock_seq (id smallint PRIMARY KEY CHECK (id = 1), high_water numeric(20,0) NOT NULL);
        CREATE TABLE keylock_clients (rid numeric(20,0) NOT NULL PRIMARY KEY, name text NOT NULL, address text NOT NULL,
          pid integer NOT NULL, hostname text NOT NULL, greeted_at_ms bigint NOT NULL);
        CREATE TABLE keylock_slot_events (slot smallint NOT NULL, kind text NOT NULL, term numeric(20,0) NOT NULL,
          rid numeric(20,0) NOT NULL, time_ms bigint NOT NULL, write_nr bigint NOT NULL, PRIMARY KEY (slot, kind));
        INSERT INTO keylock_meta VALUES ('schema_version', '1');
        INSERT INTO keylock_config VALUES (1, 'old-cluster', NULL, 5);
        INSERT INTO keylock_config_slots VALUES (0, '127.0.0.1', 7411);
        INSERT INTO keylock_seq VALUES (1, 77);
        INSERT INTO keylock_clients VALUES (9, 'old', '127.0.0.1:5000', 4242, 'h', 6);
        INSERT INTO keylock_slot_events VALUES (0, 'ELECT', 3, 8, 7, 1);`);
    });
    const store = await openStore(scratchUrl);
    try {
      assert.equal((await store.readConfig())?.clusterId, "old-cluster");
      assert.equal(await store.readSeqHighWater(), 77n);
      assert.deepEqual(await store.listClients(), [
        { rid: 9n, name: "old", address: "127.0.0.1:5000", pid: 0, pidStart: "", hostname: "h", greetedAtMs: 6, resumeKey: "", claimKey: "" },
      ]);
      assert.deepEqual(await store.readSlots(), [{ slot: 0, events: { ELECT: { term: 3n, rid: 8n, timeMs: 7, writeNr: 1 } } }]);
      await store.writeSlotEvent(0, "BEGIN", { term: 4n, rid: 8n, timeMs: 8, pid: 5, pidStart: "h m b 1" });
      assert.deepEqual((await store.readSlots())[0]?.events.BEGIN, { term: 4n, rid: 8n, timeMs: 8, writeNr: 2, pid: 5, pidStart: "h m b 1" });
    } finally {
      await store.close();
    }
    await withPgAdmin(scratchUrl, async (c) => {
      const { rows } = await c.query("SELECT value FROM keylock_meta WHERE name = 'schema_version'");
      assert.deepEqual(rows, [{ value: "4" }]);
    });
  });

  test("postgres store - a version 3 database opens, migrated: the grant-tag key table added, the key made on demand", async () => {
    await withPgAdmin(scratchUrl, (c) => c.query("DROP SCHEMA public CASCADE; CREATE SCHEMA public;"));
    const first = await openStore(scratchUrl);
    await first.format(config([0]));
    await first.raiseSeqHighWater(77n);
    await first.close();
    // A version 3 database is this schema without the grant-tag key table.
    await withPgAdmin(scratchUrl, (c) =>
      c.query(
        "DROP TABLE keylock_grant_tag_key; UPDATE keylock_meta SET value = '3' WHERE name = 'schema_version';",
      ),
    );
    const [a, b] = await Promise.all([openStore(scratchUrl), openStore(scratchUrl)]);
    let key: Uint8Array;
    try {
      assert.equal((await a.readConfig())?.clusterId, "cluster-test");
      assert.equal(await a.readSeqHighWater(), 77n);
      const keys = await Promise.all([a.grantTagKey(), b.grantTagKey()]);
      key = keys[0];
      assert.equal(key.length, 16);
      assert.deepEqual(keys[1], key);
    } finally {
      await a.close();
      await b.close();
    }
    const again = await openStore(scratchUrl);
    try {
      assert.deepEqual(await again.grantTagKey(), key);
    } finally {
      await again.close();
    }
    await withPgAdmin(scratchUrl, async (c) => {
      const { rows } = await c.query("SELECT value FROM keylock_meta WHERE name = 'schema_version'");
      assert.deepEqual(rows, [{ value: "4" }]);
      const keyRows = await c.query("SELECT id, octet_length(key) AS bytes FROM keylock_grant_tag_key");
      assert.deepEqual(keyRows.rows, [{ id: 1, bytes: 16 }]);
    });
  });

  test("postgres store - members racing to make the grant-tag key all get the same key", async () => {
    await withPgAdmin(scratchUrl, (c) => c.query("DROP SCHEMA public CASCADE; CREATE SCHEMA public;"));
    const stores = await Promise.all(Array.from({ length: 6 }, () => openStore(scratchUrl)));
    try {
      await stores[0]!.format(config([0]));
      const keys = await Promise.all(stores.flatMap((s) => [s.grantTagKey(), s.grantTagKey()]));
      for (const key of keys) assert.deepEqual(key, keys[0], "one key for every member");
      assert.equal(keys[0]!.length, 16);
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  test("postgres store - the grant-tag key table holds one key of 16 bytes (the schema refuses anything else)", async () => {
    await withPgAdmin(scratchUrl, (c) => c.query("DROP SCHEMA public CASCADE; CREATE SCHEMA public;"));
    const store = await openStore(scratchUrl);
    let key: Uint8Array;
    try {
      await store.format(config([0]));
      key = await store.grantTagKey();
    } finally {
      await store.close();
    }
    await withPgAdmin(scratchUrl, async (c) => {
      await assert.rejects(
        c.query("INSERT INTO keylock_grant_tag_key (id, key) VALUES (2, $1)", [Buffer.alloc(16)]),
        /check constraint/,
      );
      await assert.rejects(
        c.query("UPDATE keylock_grant_tag_key SET key = $1 WHERE id = 1", [Buffer.alloc(15)]),
        /check constraint/,
      );
      const { rows } = await c.query<{ key: Buffer }>("SELECT key FROM keylock_grant_tag_key");
      assert.deepEqual(new Uint8Array(rows[0]!.key), key);
    });
  });

  test("postgres store - members opening a fresh database at once do not race on the schema", async () => {
    await withPgAdmin(scratchUrl, (c) => c.query("DROP SCHEMA public CASCADE; CREATE SCHEMA public;"));
    const stores = await Promise.all(Array.from({ length: 6 }, () => openStore(scratchUrl)));
    await Promise.all(stores.map((s) => s.close()));
  });
}

test("postgres store - the url never shows the password", () => {
  const parsed = parseStoreUrl("postgres://keylock:s3cret@db.example:5433/locks?sslmode=require");
  assert.equal(parsed.kind, "postgres");
  assert.ok(parsed.kind === "postgres");
  assert.equal(parsed.redacted, "postgres://keylock:***@db.example:5433/locks?sslmode=require");
  const query = parseStoreUrl("postgresql://keylock@db.example/locks?password=s3cret");
  assert.ok(query.kind === "postgres");
  assert.equal(query.redacted, "postgresql://keylock@db.example/locks?password=***");
});

test("postgres store - a failed open names the redacted url, not the password", async () => {
  // Port 1 on loopback: nothing listens, so the connection is refused at once.
  await assert.rejects(PostgresStore.open("postgres://keylock:s3cret@127.0.0.1:1/locks"), (e: unknown) => {
    assert.ok(e instanceof StoreError);
    assert.equal(e.code, "EIO");
    assert.match(e.message, /postgres:\/\/keylock:\*\*\*@127\.0\.0\.1:1\/locks/);
    assert.doesNotMatch(e.message, /s3cret/);
    assert.ok(e.cause !== undefined, "the driver error is the cause");
    return true;
  });
});
