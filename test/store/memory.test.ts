/**
 * The memory store passes the shared conformance suite; a second instance on the same MemoryDatabase
 * plays "another member on the same store". Also: openStore's URL parsing, which needs no I/O.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { MemoryDatabase, MemoryStore } from "../../src/store/memory.js";
import { openStore } from "../../src/store/open.js";
import { parseStoreUrl, redactStoreUrl, StoreError } from "../../src/store/store.js";
import { config, storeConformance } from "./conformance.js";

storeConformance("memory", () => Promise.resolve(new MemoryStore()), {
  reopen: (store) => {
    assert.ok(store instanceof MemoryStore);
    return Promise.resolve(new MemoryStore(store.database));
  },
});

test("memory store - instances on one MemoryDatabase share state; a new database is empty", async () => {
  const database = new MemoryDatabase();
  const a = new MemoryStore(database);
  await a.format(config([0]));
  await a.close();
  const b = new MemoryStore(database);
  assert.equal((await b.readConfig())?.clusterId, "cluster-test");
  assert.equal(await new MemoryStore().readConfig(), null);
  await b.close();
});

test("memory store - the grant-tag key comes from the database's random source, once", async () => {
  const draws: number[] = [];
  const database = new MemoryDatabase({
    randomBytes: (size) => {
      draws.push(size);
      return Uint8Array.from({ length: size }, (_, i) => i + 1);
    },
  });
  const a = new MemoryStore(database);
  await a.format(config([0]));
  const expected = Uint8Array.from({ length: 16 }, (_, i) => i + 1);
  assert.deepEqual(await a.grantTagKey(), expected);
  assert.deepEqual(await new MemoryStore(database).grantTagKey(), expected);
  assert.deepEqual(draws, [16], "drawn once, 16 bytes");
  await a.close();
});

test("memory store - returned records are copies", async () => {
  const store = new MemoryStore();
  await store.format(config([0]));
  const record = { rid: 9n, name: "n", address: "a", pid: 1, pidStart: "h m b 1", hostname: "h", greetedAtMs: 1, resumeKey: "", claimKey: "" };
  await store.insertClient(record);
  record.name = "changed after insert";
  const read = await store.getClient(9n);
  assert.ok(read !== null);
  assert.equal(read.name, "n");
  read.name = "changed after read";
  assert.equal((await store.getClient(9n))?.name, "n");
  const cfg = await store.readConfig();
  assert.ok(cfg !== null);
  cfg.slots.pop();
  assert.equal((await store.readConfig())?.slots.length, 1);
  await store.close();
});

test("store url - memory: opens an empty memory store", async () => {
  const store = await openStore("memory:");
  assert.ok(store instanceof MemoryStore);
  assert.equal(store.url, "memory:");
  assert.equal(await store.readConfig(), null);
  await store.close();
});

test("store url - forms are recognised", () => {
  assert.deepEqual(parseStoreUrl("sqlite:/var/lib/keylock/store.db"), {
    kind: "sqlite",
    path: "/var/lib/keylock/store.db",
  });
  assert.deepEqual(parseStoreUrl("sqlite:relative/dir/x.db"), { kind: "sqlite", path: "relative/dir/x.db" });
  assert.deepEqual(parseStoreUrl("memory:"), { kind: "memory" });
  for (const url of [
    "postgres://u@h:5432/db",
    "postgresql://u@h/db",
    "postgres:///db?host=/run/postgresql",
  ]) {
    assert.deepEqual(parseStoreUrl(url), { kind: "postgres", connectionString: url, redacted: url });
  }
});

const badUrls: [string, RegExp][] = [
  ["", /empty/],
  ["sqlite:", /no file path/],
  ["sqlite://tmp/x.db", /not sqlite:\/\//],
  ["memory:abc", /takes no path/],
  ["mysql://u@h/db", /scheme "mysql:" is not supported/],
  ["/tmp/store.db", /no scheme/],
  ["postgres://u:pw@h:99999/db", /not a valid URL/],
];
for (const [url, message] of badUrls) {
  test(`store url - "${url}" is refused with EINVAL naming the problem`, async () => {
    assert.throws(
      () => parseStoreUrl(url),
      (e: unknown) => e instanceof StoreError && e.code === "EINVAL",
    );
    await assert.rejects(openStore(url), (e: unknown) => {
      assert.ok(e instanceof StoreError);
      assert.equal(e.code, "EINVAL");
      assert.match(e.message, message);
      assert.doesNotMatch(e.message, /pw/, "a password is never echoed");
      return true;
    });
  });
}

test("store url - redactStoreUrl hides passwords and never throws", () => {
  assert.equal(redactStoreUrl("postgres://u:secret@h/db"), "postgres://u:***@h/db");
  assert.equal(redactStoreUrl("sqlite:/x.db"), "sqlite:/x.db");
  assert.equal(redactStoreUrl("postgres://u:secret@h:99999/db"), "postgres:(invalid store URL)");
  assert.equal(redactStoreUrl(""), "(invalid store URL)");
});
