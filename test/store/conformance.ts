/**
 * The store conformance suite: every engine (memory, SQLite, PostgreSQL) must pass exactly these
 * tests, which spell out the `Store` contract in src/store/store.ts. Each engine's test file calls
 * `storeConformance(name, open, options)`.
 *
 * Relies on:
 * - `open()` returning a NEW, EMPTY, unformatted store each time it is called;
 * - `options.reopen(store)` returning a second instance on the same backing store (same file, same
 *   database, same MemoryDatabase); by default `openStore(store.url)`;
 * - stores being closed by the suite (every store a test opens is closed when the test ends, pass or
 *   fail), so pools and file handles never keep the test process alive.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { GRANT_TAG_KEY_BYTES } from "../../src/core/grant-tags.js";
import { TERM_MAX } from "../../src/core/limits.js";
import { openStore } from "../../src/store/open.js";
import {
  SLOT_EVENT_KINDS,
  StoreError,
  U64_MAX,
  type ClusterConfig,
  type MountedClientRecord,
  type SlotEventKind,
  type StoreErrorCode,
  type Store,
} from "../../src/store/store.js";

export interface ConformanceOptions {
  /** A second instance on the same backing store as `store`; default `openStore(store.url)`. */
  reopen?: (store: Store) => Promise<Store>;
  /** When set, every test is skipped with this reason (e.g. the database server is unreachable). */
  skip?: string;
}

interface Harness {
  /** A new, empty, unformatted store. */
  open(): Promise<Store>;
  /** A new store formatted with `config(slots)`. */
  formatted(slots?: number[]): Promise<Store>;
  /** A second instance on the same backing store. */
  reopen(store: Store): Promise<Store>;
}

const TWO_63 = 1n << 63n;

export function config(slots: number[] = [0, 1, 2], overrides: Partial<ClusterConfig> = {}): ClusterConfig {
  return {
    clusterId: "cluster-test",
    slots: slots.map((slot) => ({ slot, host: "127.0.0.1", port: 7411 + slot })),
    secretDigest: null,
    formattedAtMs: 1_700_000_000_123,
    ...overrides,
  };
}

function client(rid: bigint, name = `client-${rid.toString(16)}`): MountedClientRecord {
  return {
    rid,
    name,
    address: "127.0.0.1:50000",
    pid: 4242,
    pidStart: "host-a 3d1219c7c4c5404aaa1f6d2a48adfda4 ce61f997-51b0-4a6d-a087-d4187ceb2570 123456",
    hostname: "host-a",
    greetedAtMs: 1_700_000_000_456,
    resumeKey: "ab".repeat(32),
    claimKey: "",
  };
}

async function rejectsWith(promise: Promise<unknown>, code: StoreErrorCode, why: string): Promise<void> {
  await assert.rejects(
    promise,
    (error: unknown) => {
      assert.ok(error instanceof StoreError, `${why}: expected a StoreError, got ${String(error)}`);
      assert.equal(error.code, code, `${why}: ${error.message}`);
      return true;
    },
    why,
  );
}

export function storeConformance(
  name: string,
  open: () => Promise<Store>,
  options: ConformanceOptions = {},
): void {
  const reopenDefault = (store: Store): Promise<Store> => openStore(store.url);
  const reopenImpl = options.reopen ?? reopenDefault;

  function def(title: string, body: (h: Harness) => Promise<void>): void {
    test(`store conformance (${name}) - ${title}`, async (t) => {
      if (options.skip !== undefined) {
        t.skip(options.skip);
        return;
      }
      const opened: Store[] = [];
      const h: Harness = {
        async open() {
          const store = await open();
          opened.push(store);
          return store;
        },
        async formatted(slots = [0, 1, 2]) {
          const store = await h.open();
          await store.format(config(slots));
          return store;
        },
        async reopen(store) {
          const second = await reopenImpl(store);
          opened.push(second);
          return second;
        },
      };
      try {
        await body(h);
      } finally {
        for (const store of opened) await store.close();
      }
    });
  }

  // ---- config ------------------------------------------------------------------------------------

  def("readConfig is null before format and an unformatted store reads as empty", async (h) => {
    const store = await h.open();
    assert.equal(await store.readConfig(), null);
    assert.equal(await store.readSeqHighWater(), 0n);
    assert.deepEqual(await store.listClients(), []);
    assert.equal(await store.getClient(1n), null);
    assert.deepEqual(await store.readSlots(), []);
  });

  def("writes before format are refused with ENOTFORMATTED", async (h) => {
    const store = await h.open();
    const event = { term: 1n, rid: 1n, timeMs: 1 };
    await rejectsWith(store.raiseSeqHighWater(1n), "ENOTFORMATTED", "raiseSeqHighWater");
    await rejectsWith(store.insertClient(client(1n)), "ENOTFORMATTED", "insertClient");
    await rejectsWith(store.deleteClient(1n), "ENOTFORMATTED", "deleteClient");
    await rejectsWith(store.writeSlotEvent(0, "BEGIN", event), "ENOTFORMATTED", "writeSlotEvent");
    await rejectsWith(store.writeElect(0, event), "ENOTFORMATTED", "writeElect");
    assert.deepEqual(await store.readSlots(), []);
    assert.deepEqual(await store.listClients(), []);
  });

  def("format then readConfig round-trips the config with slots ordered by slot", async (h) => {
    const store = await h.open();
    const digest = "ab".repeat(32);
    const written: ClusterConfig = {
      clusterId: "c-ü-42",
      slots: [
        { slot: 14, host: "10.0.0.3", port: 65534 },
        { slot: 0, host: "::1", port: 1 },
        { slot: 7, host: "member-b.example", port: 7411 },
      ],
      secretDigest: digest,
      formattedAtMs: 1_700_000_000_999,
    };
    await store.format(written);
    assert.deepEqual(await store.readConfig(), {
      ...written,
      slots: [
        { slot: 0, host: "::1", port: 1 },
        { slot: 7, host: "member-b.example", port: 7411 },
        { slot: 14, host: "10.0.0.3", port: 65534 },
      ],
    });
  });

  def("format accepts the largest cluster: 15 slots 0..14", async (h) => {
    const store = await h.open();
    const all = Array.from({ length: 15 }, (_, i) => i);
    await store.format(config(all));
    assert.deepEqual(
      (await store.readConfig())?.slots.map((s) => s.slot),
      all,
    );
  });

  def("format happens once: a second format is refused with EEXIST and the first config stays", async (h) => {
    const store = await h.open();
    await store.format(config([0]));
    await rejectsWith(store.format(config([0, 1], { clusterId: "other" })), "EEXIST", "second format");
    const second = await h.reopen(store);
    await rejectsWith(second.format(config([3])), "EEXIST", "format from another instance");
    const read = await second.readConfig();
    assert.equal(read?.clusterId, "cluster-test");
    assert.deepEqual(read?.slots, [{ slot: 0, host: "127.0.0.1", port: 7411 }]);
  });

  def("concurrent formats from two instances: exactly one succeeds, the other gets EEXIST", async (h) => {
    const a = await h.open();
    const b = await h.reopen(a);
    const results = await Promise.allSettled([
      a.format(config([0], { clusterId: "from-a" })),
      b.format(config([1], { clusterId: "from-b" })),
    ]);
    const won = results.filter((r) => r.status === "fulfilled");
    assert.equal(won.length, 1, "exactly one format succeeds");
    const lost = results.find((r) => r.status === "rejected");
    assert.ok(lost?.reason instanceof StoreError && lost.reason.code === "EEXIST", String(lost?.reason));
    const winner = results[0]?.status === "fulfilled" ? "from-a" : "from-b";
    const read = await a.readConfig();
    assert.equal(read?.clusterId, winner);
    assert.equal(read?.slots.length, 1);
  });

  const withSlots = (slots: ClusterConfig["slots"]): ClusterConfig => ({ ...config([]), slots });
  const refusals: [string, ClusterConfig, RegExp][] = [
    ["0 slots", config([]), /at least one slot/],
    // Slots 0..15: the count (16 > 15) is what is refused, before any slot number is looked at.
    [
      "16 slots",
      withSlots(Array.from({ length: 16 }, (_, i) => ({ slot: i, host: "127.0.0.1", port: 7411 + i }))),
      /16 slots given; at most 15/,
    ],
    ["slot 15", config([0, 15]), /slot 15 is outside 0\.\.14/],
    ["slot -1", config([-1]), /slot -1 is outside/],
    ["a fractional slot number", config([1.5]), /slot 1\.5 is outside/],
    [
      "a duplicate slot",
      withSlots([...config([0, 1]).slots, { slot: 1, host: "127.0.0.2", port: 1 }]),
      /slot 1 appears more than once/,
    ],
    [
      "a duplicate host:port",
      withSlots([
        { slot: 0, host: "h", port: 7 },
        { slot: 1, host: "h", port: 7 },
      ]),
      /slots 0 and 1 share the address h:7/,
    ],
    [
      "a duplicate host:port differing only in case",
      withSlots([
        { slot: 0, host: "Host", port: 7 },
        { slot: 1, host: "host", port: 7 },
      ]),
      /share the address/,
    ],
    ["port 0", withSlots([{ slot: 0, host: "h", port: 0 }]), /port 0 is outside 1\.\.65534/],
    ["port 65535", withSlots([{ slot: 0, host: "h", port: 65535 }]), /port 65535 is outside 1\.\.65534/],
    ["a fractional port", withSlots([{ slot: 0, host: "h", port: 80.5 }]), /port 80\.5 is outside/],
    ["an empty host", withSlots([{ slot: 0, host: "", port: 80 }]), /host must not be empty/],
    ["an empty cluster id", config([0], { clusterId: "" }), /cluster id must not be empty/],
    [
      "a secret digest that is not 64 lowercase hex digits",
      config([0], { secretDigest: "AB".repeat(32) }),
      /secret digest/,
    ],
    ["a negative formattedAtMs", config([0], { formattedAtMs: -1 }), /formattedAtMs/],
  ];
  for (const [what, bad, message] of refusals) {
    def(`format refuses ${what} with EINVAL and writes nothing`, async (h) => {
      const store = await h.open();
      await assert.rejects(store.format(bad), (error: unknown) => {
        assert.ok(error instanceof StoreError && error.code === "EINVAL", String(error));
        assert.match(error.message, message);
        return true;
      });
      assert.equal(await store.readConfig(), null, "nothing was written");
      await store.format(config([0]));
      assert.equal((await store.readConfig())?.slots.length, 1, "a valid format still works afterwards");
    });
  }

  // ---- seq high-water ----------------------------------------------------------------------------

  def("seq high-water starts at 0, rises, and never lowers", async (h) => {
    const store = await h.formatted();
    assert.equal(await store.readSeqHighWater(), 0n);
    assert.equal(await store.raiseSeqHighWater(1000n), 1000n);
    assert.equal(await store.raiseSeqHighWater(10n), 1000n, "a lower value returns the stored one");
    assert.equal(await store.readSeqHighWater(), 1000n);
    assert.equal(await store.raiseSeqHighWater(1000n), 1000n);
    assert.equal(await store.raiseSeqHighWater(1001n), 1001n);
    assert.equal(await store.readSeqHighWater(), 1001n);
  });

  def("seq high-water holds values near 2^64-1 exactly and refuses values outside 64 bits", async (h) => {
    const store = await h.formatted();
    assert.equal(await store.raiseSeqHighWater(TWO_63 - 1n), TWO_63 - 1n);
    assert.equal(await store.raiseSeqHighWater(TWO_63), TWO_63, "2^63 is above 2^63-1 (unsigned order)");
    assert.equal(await store.raiseSeqHighWater(TWO_63 - 1n), TWO_63);
    assert.equal(await store.raiseSeqHighWater(U64_MAX - 1n), U64_MAX - 1n);
    assert.equal(await store.raiseSeqHighWater(U64_MAX), U64_MAX);
    assert.equal(await store.readSeqHighWater(), U64_MAX);
    await rejectsWith(store.raiseSeqHighWater(U64_MAX + 1n), "EINVAL", "2^64");
    await rejectsWith(store.raiseSeqHighWater(-1n), "EINVAL", "-1");
    assert.equal(await store.readSeqHighWater(), U64_MAX);
  });

  def("seq high-water survives reopen", async (h) => {
    const first = await h.formatted();
    await first.raiseSeqHighWater(123_456_789_012_345n);
    await first.close();
    const second = await h.reopen(first);
    assert.equal(await second.readSeqHighWater(), 123_456_789_012_345n);
    assert.equal(await second.raiseSeqHighWater(5n), 123_456_789_012_345n);
  });

  def("concurrent raises from two instances keep the maximum", async (h) => {
    const a = await h.formatted();
    const b = await h.reopen(a);
    const values = Array.from({ length: 20 }, (_, i) => BigInt((i * 7919) % 101) * 1000n);
    const returned = await Promise.all(values.map((v, i) => (i % 2 === 0 ? a : b).raiseSeqHighWater(v)));
    returned.forEach((r, i) => assert.ok(r >= values[i]!, `raise ${values[i]} returned ${r}`));
    const max = values.reduce((m, v) => (v > m ? v : m), 0n);
    assert.equal(await a.readSeqHighWater(), max);
    assert.equal(await b.readSeqHighWater(), max);
  });

  // ---- mounted clients ---------------------------------------------------------------------------

  def("insertClient is idempotent (B21)", async (h) => {
    const store = await h.formatted();
    const first = client(0x1234n, "first");
    await store.insertClient(first);
    await store.insertClient(first);
    await store.insertClient({ ...first, name: "second", address: "10.9.9.9:1", pid: 1, pidStart: "other", greetedAtMs: 2, resumeKey: "cd".repeat(32), claimKey: "ef".repeat(32) });
    assert.deepEqual(await store.getClient(0x1234n), first, "the first record is kept");
    assert.deepEqual(await store.listClients(), [first]);
    const other = await h.reopen(store);
    await other.insertClient({ ...first, name: "third" });
    assert.deepEqual(await other.getClient(0x1234n), first, "also from another instance");
  });

  def("deleteClient is idempotent", async (h) => {
    const store = await h.formatted();
    await store.deleteClient(77n);
    await store.insertClient(client(77n));
    await store.insertClient(client(78n));
    await store.deleteClient(77n);
    await store.deleteClient(77n);
    assert.equal(await store.getClient(77n), null);
    assert.deepEqual(await store.listClients(), [client(78n)]);
    await store.deleteClient(U64_MAX);
  });

  def("listClients is ordered by unsigned rid, including rids ≥ 2^63", async (h) => {
    const store = await h.formatted();
    const rids = [U64_MAX, 1n, TWO_63, 0xffn, TWO_63 - 1n, 0x100n, U64_MAX - 1n, TWO_63 + 1n, 2n ** 32n];
    for (const rid of rids) await store.insertClient(client(rid));
    const sorted = [...rids].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    assert.deepEqual(
      (await store.listClients()).map((c) => c.rid),
      sorted,
    );
  });

  def("rids near 2^64-1 and above 2^53 round-trip exactly", async (h) => {
    const store = await h.formatted();
    const rids = [U64_MAX, U64_MAX - 1n, TWO_63, (1n << 53n) + 1n, 0xdeadbeefcafef00dn];
    for (const rid of rids) await store.insertClient(client(rid));
    for (const rid of rids) assert.deepEqual(await store.getClient(rid), client(rid), `rid ${rid}`);
    assert.equal(await store.getClient(1n << 53n), null, "2^53 is a different rid from 2^53+1");
    const other = await h.reopen(store);
    assert.deepEqual(
      (await other.listClients()).map((c) => c.rid),
      [...rids].sort((a, b) => (a < b ? -1 : 1)),
    );
  });

  def("client records are validated with EINVAL", async (h) => {
    const store = await h.formatted();
    await rejectsWith(store.insertClient(client(0n)), "EINVAL", "rid 0");
    await rejectsWith(store.insertClient(client(U64_MAX + 1n)), "EINVAL", "rid 2^64");
    await rejectsWith(store.insertClient(client(-1n)), "EINVAL", "rid -1");
    await rejectsWith(store.insertClient({ ...client(5n), pid: -1 }), "EINVAL", "pid -1");
    await rejectsWith(store.insertClient({ ...client(5n), greetedAtMs: 1.5 }), "EINVAL", "fractional time");
    await rejectsWith(store.insertClient({ ...client(5n), resumeKey: "AB".repeat(32) }), "EINVAL", "resumeKey in capitals");
    await rejectsWith(store.insertClient({ ...client(5n), claimKey: "ab" }), "EINVAL", "claimKey too short");
    await rejectsWith(store.insertClient({ ...client(5n), pid: 2 ** 31 }), "EINVAL", "pid 2^31");
    await rejectsWith(store.insertClient({ ...client(5n), pid: 0 }), "EINVAL", "a start token without a pid");
    await rejectsWith(store.insertClient({ ...client(5n), pidStart: "" }), "EINVAL", "a pid without a start token");
    await rejectsWith(store.insertClient({ ...client(5n), pidStart: "x".repeat(1025) }), "EINVAL", "overlong start token");
    await rejectsWith(store.getClient(-1n), "EINVAL", "getClient -1");
    await rejectsWith(store.deleteClient(U64_MAX + 1n), "EINVAL", "deleteClient 2^64");
    assert.deepEqual(await store.listClients(), []);
  });

  def("client records are visible to a second instance and survive reopen", async (h) => {
    const a = await h.formatted();
    const b = await h.reopen(a);
    await a.insertClient(client(10n));
    assert.deepEqual(await b.getClient(10n), client(10n));
    await b.insertClient(client(11n));
    await b.deleteClient(10n);
    await a.close();
    await b.close();
    const c = await h.reopen(a);
    assert.deepEqual(await c.listClients(), [client(11n)]);
  });

  def("concurrent inserts and deletes from two instances are never lost (B25)", async (h) => {
    const a = await h.formatted();
    const b = await h.reopen(a);
    const rids = Array.from({ length: 40 }, (_, i) => BigInt(i + 1) * 0x0101010101n);
    await Promise.all(rids.map((rid, i) => (i % 2 === 0 ? a : b).insertClient(client(rid))));
    const doomed = rids.filter((_, i) => i % 3 === 0);
    const late = Array.from({ length: 10 }, (_, i) => TWO_63 + BigInt(i));
    await Promise.all([
      ...doomed.map((rid, i) => (i % 2 === 0 ? b : a).deleteClient(rid)),
      ...late.map((rid, i) => (i % 2 === 0 ? a : b).insertClient(client(rid))),
    ]);
    const expected = [...rids.filter((rid) => !doomed.includes(rid)), ...late];
    assert.deepEqual(
      (await a.listClients()).map((c) => c.rid),
      expected,
    );
    assert.deepEqual(
      (await b.listClients()).map((c) => c.rid),
      expected,
    );
  });

  def("client records carry the process the server found, or none (pid 0, pidStart \"\")", async (h) => {
    const store = await h.formatted();
    const found = client(0x51n);
    const none = { ...client(0x52n), pid: 0, pidStart: "" };
    await store.insertClient(found);
    await store.insertClient(none);
    const other = await h.reopen(store);
    assert.deepEqual(await other.getClient(0x51n), found);
    assert.deepEqual(await other.getClient(0x52n), none);
    assert.deepEqual(await other.listClients(), [found, none]);
  });

  // ---- slot events -------------------------------------------------------------------------------

  def("slot events carry the writing member's pid and start token when given; a later write replaces them", async (h) => {
    const store = await h.formatted();
    const me = { pid: 31337, pidStart: "host-b - boot 42" };
    await store.writeSlotEvent(1, "BEGIN", { term: 3n, rid: 0xaan, timeMs: 1000, ...me });
    assert.equal(await store.writeElect(1, { term: 4n, rid: 0xaan, timeMs: 1001, ...me }), true);
    await store.writeSlotEvent(2, "BEGIN", { term: 3n, rid: 0xbbn, timeMs: 1002 });
    const other = await h.reopen(store);
    let slots = await other.readSlots();
    assert.deepEqual(slots[0]?.events.BEGIN, { term: 3n, rid: 0xaan, timeMs: 1000, writeNr: 1, ...me });
    assert.deepEqual(slots[0]?.events.ELECT, { term: 4n, rid: 0xaan, timeMs: 1001, writeNr: 2, ...me });
    assert.deepEqual(slots[1]?.events.BEGIN, { term: 3n, rid: 0xbbn, timeMs: 1002, writeNr: 1 }, "no process recorded: none read");
    await other.writeSlotEvent(1, "BEGIN", { term: 5n, rid: 0xccn, timeMs: 1003 });
    slots = await store.readSlots();
    assert.deepEqual(slots[0]?.events.BEGIN, { term: 5n, rid: 0xccn, timeMs: 1003, writeNr: 3 }, "the newer write's (absent) process");
  });

  def("slot event processes are validated with EINVAL", async (h) => {
    const store = await h.formatted();
    const event = { term: 1n, rid: 1n, timeMs: 1 };
    await rejectsWith(store.writeSlotEvent(0, "BEGIN", { ...event, pid: 7 }), "EINVAL", "a pid without a start token");
    await rejectsWith(store.writeSlotEvent(0, "BEGIN", { ...event, pidStart: "x" }), "EINVAL", "a start token without a pid");
    await rejectsWith(store.writeSlotEvent(0, "BEGIN", { ...event, pid: 0, pidStart: "x" }), "EINVAL", "pid 0");
    await rejectsWith(store.writeElect(0, { ...event, pid: -3, pidStart: "x" }), "EINVAL", "pid -3");
    await rejectsWith(store.writeElect(0, { ...event, pid: 7, pidStart: "x".repeat(1025) }), "EINVAL", "overlong start token");
    assert.deepEqual(await store.readSlots(), []);
  });

  def("slot events round-trip with writeNr incrementing per slot write", async (h) => {
    const store = await h.formatted();
    await store.writeSlotEvent(1, "BEGIN", { term: 3n, rid: 0xaan, timeMs: 1000 });
    await store.writeSlotEvent(1, "TERM", { term: 4n, rid: 0xaan, timeMs: 1001 });
    await store.writeSlotEvent(1, "TERM", { term: 5n, rid: 0xaan, timeMs: 1002 });
    assert.equal(await store.writeElect(1, { term: 5n, rid: 0xaan, timeMs: 1003 }), true);
    await store.writeSlotEvent(1, "FENCE", { term: 5n, rid: 0xaan, timeMs: 1004 });
    await store.writeSlotEvent(1, "STOP", { term: 5n, rid: 0xaan, timeMs: 1005 });
    await store.writeSlotEvent(1, "END", { term: 5n, rid: 0xaan, timeMs: 1006 });
    assert.deepEqual(await store.readSlots(), [
      {
        slot: 1,
        events: {
          BEGIN: { term: 3n, rid: 0xaan, timeMs: 1000, writeNr: 1 },
          TERM: { term: 5n, rid: 0xaan, timeMs: 1002, writeNr: 3 },
          ELECT: { term: 5n, rid: 0xaan, timeMs: 1003, writeNr: 4 },
          FENCE: { term: 5n, rid: 0xaan, timeMs: 1004, writeNr: 5 },
          STOP: { term: 5n, rid: 0xaan, timeMs: 1005, writeNr: 6 },
          END: { term: 5n, rid: 0xaan, timeMs: 1006, writeNr: 7 },
        },
      },
    ]);
    const other = await h.reopen(store);
    await other.writeSlotEvent(1, "BEGIN", { term: 6n, rid: 0xbbn, timeMs: 2000 });
    const slots = await store.readSlots();
    assert.deepEqual(slots[0]?.events.BEGIN, { term: 6n, rid: 0xbbn, timeMs: 2000, writeNr: 8 });
  });

  def("a slot write changes only its own slot (B43)", async (h) => {
    const store = await h.formatted();
    await store.writeSlotEvent(0, "BEGIN", { term: 1n, rid: 1n, timeMs: 1 });
    await store.writeSlotEvent(2, "BEGIN", { term: 1n, rid: 2n, timeMs: 1 });
    const before = await store.readSlots();
    await store.writeSlotEvent(0, "TERM", { term: 2n, rid: 1n, timeMs: 2 });
    await store.writeElect(0, { term: 2n, rid: 1n, timeMs: 3 });
    const after = await store.readSlots();
    assert.deepEqual(after[1], before[1], "slot 2 is untouched");
    assert.deepEqual(after[1], { slot: 2, events: { BEGIN: { term: 1n, rid: 2n, timeMs: 1, writeNr: 1 } } });
    assert.equal(after[0]?.events.ELECT?.writeNr, 3);
  });

  def("readSlots lists only slots with events, ordered by slot, to every instance (B42)", async (h) => {
    const store = await h.formatted([0, 3, 9, 14]);
    const other = await h.reopen(store);
    await other.writeSlotEvent(14, "TERM", { term: 9n, rid: 14n, timeMs: 5 });
    await store.writeSlotEvent(3, "BEGIN", { term: 7n, rid: 3n, timeMs: 5 });
    await other.writeSlotEvent(0, "END", { term: 8n, rid: 1n, timeMs: 5 });
    for (const s of [store, other]) {
      const slots = await s.readSlots();
      assert.deepEqual(
        slots.map((r) => r.slot),
        [0, 3, 14],
      );
      // A restarting member starts from the greatest term recorded in any slot (B42).
      const greatest = slots
        .flatMap((r) => Object.values(r.events))
        .reduce((m, e) => (e.term > m ? e.term : m), 0n);
      assert.equal(greatest, 9n);
    }
  });

  def(
    "writeSlotEvent refuses slots outside 0..14 or not configured, and bad events, with EINVAL",
    async (h) => {
      const store = await h.formatted([0, 1]);
      const ok = { term: 1n, rid: 1n, timeMs: 1 };
      await rejectsWith(store.writeSlotEvent(15, "BEGIN", ok), "EINVAL", "slot 15");
      await rejectsWith(store.writeSlotEvent(-1, "BEGIN", ok), "EINVAL", "slot -1");
      await rejectsWith(store.writeSlotEvent(2, "BEGIN", ok), "EINVAL", "unconfigured slot 2");
      await rejectsWith(store.writeElect(2, ok), "EINVAL", "elect in unconfigured slot 2");
      await rejectsWith(store.writeSlotEvent(0, "VOTE" as SlotEventKind, ok), "EINVAL", "unknown kind");
      await rejectsWith(
        store.writeSlotEvent(0, "TERM", { ...ok, term: U64_MAX + 1n }),
        "EINVAL",
        "term 2^64",
      );
      await rejectsWith(store.writeSlotEvent(0, "TERM", { ...ok, rid: -1n }), "EINVAL", "rid -1");
      await rejectsWith(store.writeSlotEvent(0, "TERM", { ...ok, timeMs: -5 }), "EINVAL", "negative time");
      await rejectsWith(store.writeElect(0, { ...ok, term: -1n }), "EINVAL", "elect term -1");
      assert.deepEqual(await store.readSlots(), []);
    },
  );

  def("slot event terms up to TERM_MAX round-trip and compare numerically", async (h) => {
    const store = await h.formatted();
    await store.writeSlotEvent(1, "TERM", { term: TERM_MAX, rid: U64_MAX, timeMs: 1 });
    assert.equal(
      await store.writeElect(0, { term: TERM_MAX - 1n, rid: 1n, timeMs: 2 }),
      false,
      "TERM_MAX > TERM_MAX - 1",
    );
    assert.equal(await store.writeElect(0, { term: TERM_MAX, rid: U64_MAX, timeMs: 3 }), true);
    const slots = await store.readSlots();
    assert.deepEqual(slots[0]?.events.ELECT, { term: TERM_MAX, rid: U64_MAX, timeMs: 3, writeNr: 1 });
    assert.deepEqual(slots[1]?.events.TERM, { term: TERM_MAX, rid: U64_MAX, timeMs: 1, writeNr: 1 });
  });

  def("a slot event term above TERM_MAX is refused with EINVAL naming TERM_MAX, writing nothing", async (h) => {
    const store = await h.formatted();
    for (const term of [TERM_MAX + 1n, TWO_63, U64_MAX]) {
      for (const kind of SLOT_EVENT_KINDS.filter((k) => k !== "ELECT")) {
        const error = await store.writeSlotEvent(0, kind, { term, rid: 1n, timeMs: 1 }).then(
          () => assert.fail(`${kind} term ${term} was accepted`),
          (e: unknown) => e as StoreError,
        );
        assert.equal(error.code, "EINVAL");
        assert.match(error.message, /TERM_MAX/);
      }
      await rejectsWith(store.writeElect(0, { term, rid: 1n, timeMs: 1 }), "EINVAL", `elect term ${term}`);
    }
    assert.deepEqual(await store.readSlots(), []);
  });

  for (const kind of SLOT_EVENT_KINDS) {
    def(`writeElect refuses when another slot has a higher term in its ${kind} event`, async (h) => {
      const store = await h.formatted();
      await store.writeSlotEvent(0, "BEGIN", { term: 1n, rid: 1n, timeMs: 1 });
      if (kind === "ELECT") assert.equal(await store.writeElect(2, { term: 5n, rid: 3n, timeMs: 2 }), true);
      else await store.writeSlotEvent(2, kind, { term: 5n, rid: 3n, timeMs: 2 });
      const before = await store.readSlots();
      assert.equal(await store.writeElect(0, { term: 4n, rid: 1n, timeMs: 3 }), false);
      assert.deepEqual(
        await store.readSlots(),
        before,
        "a refused ELECT writes nothing (no event, no writeNr)",
      );
    });
  }

  def("writeElect refuses when its own slot already has a higher term", async (h) => {
    const store = await h.formatted();
    await store.writeSlotEvent(0, "TERM", { term: 9n, rid: 1n, timeMs: 1 });
    assert.equal(await store.writeElect(0, { term: 8n, rid: 1n, timeMs: 2 }), false);
    assert.deepEqual(await store.readSlots(), [
      { slot: 0, events: { TERM: { term: 9n, rid: 1n, timeMs: 1, writeNr: 1 } } },
    ]);
  });

  def("writeElect accepts when no slot has a higher term (equal and lower terms elsewhere)", async (h) => {
    const store = await h.formatted();
    assert.equal(await store.writeElect(0, { term: 1n, rid: 1n, timeMs: 1 }), true, "an empty store accepts");
    await store.writeSlotEvent(1, "TERM", { term: 5n, rid: 2n, timeMs: 2 });
    assert.equal(await store.writeElect(1, { term: 5n, rid: 2n, timeMs: 3 }), true);
    await store.writeSlotEvent(2, "STOP", { term: 3n, rid: 3n, timeMs: 4 });
    assert.equal(await store.writeElect(0, { term: 5n, rid: 1n, timeMs: 5 }), true, "equal is not higher");
    const slots = await store.readSlots();
    assert.deepEqual(slots[0], { slot: 0, events: { ELECT: { term: 5n, rid: 1n, timeMs: 5, writeNr: 2 } } });
    assert.deepEqual(slots[1]?.events.ELECT, { term: 5n, rid: 2n, timeMs: 3, writeNr: 2 });
  });

  def("writeElect sees a higher term written by another instance", async (h) => {
    const a = await h.formatted();
    const b = await h.reopen(a);
    await b.writeSlotEvent(1, "TERM", { term: 5n, rid: 2n, timeMs: 1 });
    assert.equal(await a.writeElect(0, { term: 4n, rid: 1n, timeMs: 2 }), false);
    assert.deepEqual(
      (await a.readSlots()).map((s) => s.slot),
      [1],
    );
    assert.equal(await a.writeElect(0, { term: 5n, rid: 1n, timeMs: 3 }), true);
    assert.equal(await b.writeElect(1, { term: 4n, rid: 2n, timeMs: 4 }), false, "and the other way round");
  });

  def("concurrent elections from two instances: the higher term always wins its ELECT", async (h) => {
    const a = await h.formatted();
    const b = await h.reopen(a);
    for (let round = 1n; round <= 10n; round++) {
      const high = round * 10n;
      const low = high - 1n;
      const [highWon, lowWon] = await Promise.all([
        a.writeElect(0, { term: high, rid: 1n, timeMs: Number(round) }),
        b.writeElect(1, { term: low, rid: 2n, timeMs: Number(round) }),
      ]);
      assert.equal(highWon, true, `round ${round}: nothing higher than ${high} exists`);
      const slots = await a.readSlots();
      const lowElect = slots.find((s) => s.slot === 1)?.events.ELECT;
      if (lowWon) assert.equal(lowElect?.term, low, `round ${round}: a won ELECT is written`);
      else assert.notEqual(lowElect?.term, low, `round ${round}: a refused ELECT writes nothing`);
    }
  });

  def(
    "concurrent writes to one slot from two instances get distinct, consecutive write numbers",
    async (h) => {
      const a = await h.formatted();
      const b = await h.reopen(a);
      const writes = 30;
      await Promise.all(
        Array.from({ length: writes }, (_, i) =>
          (i % 2 === 0 ? a : b).writeSlotEvent(0, SLOT_EVENT_KINDS[i % SLOT_EVENT_KINDS.length]!, {
            term: BigInt(i),
            rid: 1n,
            timeMs: i,
          }),
        ),
      );
      const events = Object.values((await b.readSlots())[0]?.events ?? {});
      const writeNrs = events.map((e) => e.writeNr).sort((x, y) => x - y);
      assert.equal(new Set(writeNrs).size, SLOT_EVENT_KINDS.length, "each event has its own write number");
      assert.equal(writeNrs[writeNrs.length - 1], writes, "every write incremented the slot's write number");
    },
  );

  // ---- grant-tag key -----------------------------------------------------------------------------

  def(
    "grantTagKey: 16 bytes, made once, the same on every call, from every instance and after reopen",
    async (h) => {
      const store = await h.formatted();
      const key = await store.grantTagKey();
      assert.ok(key instanceof Uint8Array);
      assert.equal(key.length, GRANT_TAG_KEY_BYTES);
      assert.ok(
        key.some((byte) => byte !== 0),
        "random bytes, not a blank key",
      );
      assert.deepEqual(await store.grantTagKey(), key, "a second call");
      const other = await h.reopen(store);
      assert.deepEqual(await other.grantTagKey(), key, "another instance on the same store");
      await store.close();
      await other.close();
      const later = await h.reopen(store);
      assert.deepEqual(await later.grantTagKey(), key, "after every instance was closed");
    },
  );

  def("grantTagKey: a returned key is a copy; another store has another key", async (h) => {
    const store = await h.formatted();
    const key = await store.grantTagKey();
    const kept = new Uint8Array(key);
    key.fill(0);
    assert.deepEqual(await store.grantTagKey(), kept, "changing a returned key changes nothing stored");
    const another = await h.formatted();
    assert.notDeepEqual(await another.grantTagKey(), kept, "each cluster draws its own key");
  });

  def("grantTagKey: concurrent first calls from two instances all get the same bytes", async (h) => {
    const a = await h.formatted();
    const b = await h.reopen(a);
    const keys = await Promise.all(Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? a : b).grantTagKey()));
    for (const key of keys) {
      assert.equal(key.length, GRANT_TAG_KEY_BYTES);
      assert.deepEqual(key, keys[0], "one key for every caller");
    }
    assert.deepEqual(await a.grantTagKey(), keys[0]);
    assert.deepEqual(await b.grantTagKey(), keys[0]);
  });

  def("grantTagKey before format is refused with ENOTFORMATTED; after format it works", async (h) => {
    const store = await h.open();
    await rejectsWith(store.grantTagKey(), "ENOTFORMATTED", "grantTagKey before format");
    await store.format(config());
    const key = await store.grantTagKey();
    assert.equal(key.length, GRANT_TAG_KEY_BYTES);
    assert.deepEqual(await (await h.reopen(store)).grantTagKey(), key);
  });

  // ---- lifecycle ---------------------------------------------------------------------------------

  def("close is idempotent and later calls reject with EIO", async (h) => {
    const store = await h.formatted();
    await store.close();
    await store.close();
    await rejectsWith(store.readConfig(), "EIO", "readConfig after close");
    await rejectsWith(store.raiseSeqHighWater(1n), "EIO", "raiseSeqHighWater after close");
    await rejectsWith(store.listClients(), "EIO", "listClients after close");
    await rejectsWith(store.writeElect(0, { term: 1n, rid: 1n, timeMs: 1 }), "EIO", "writeElect after close");
    await rejectsWith(store.grantTagKey(), "EIO", "grantTagKey after close");
    const again = await h.reopen(store);
    assert.equal(
      (await again.readConfig())?.clusterId,
      "cluster-test",
      "closing one instance closes only it",
    );
  });
}
