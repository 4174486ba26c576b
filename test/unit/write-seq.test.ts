// The runtime's fencing-token sequence (src/runtime/write-seq.ts) and store watch (src/runtime/store-watch.ts)
// against a memory store that can be cut (DESIGN §9 store outages): reservations retried with back-off,
// grants told when tokens are back, WRITE_SEQ_MAX never passed, an unreachable store reported once.
import { test } from "node:test";
import assert from "node:assert/strict";
import { WRITE_SEQ_MAX } from "../../src/core/limits.js";
import { MemoryStore } from "../../src/store/memory.js";
import { ReservedWriteSeq } from "../../src/runtime/write-seq.js";
import { StoreWatch } from "../../src/runtime/store-watch.js";
import { FaultyStore } from "../support/faulty-store.js";

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function formattedStore(): Promise<MemoryStore> {
  const store = new MemoryStore();
  await store.format({ clusterId: "t", slots: [{ slot: 0, host: "127.0.0.1", port: 7411 }], secretDigest: null, formattedAtMs: 0 });
  return store;
}

async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

test("write seq - a failing reservation is retried with back-off; tokens come back, strictly above all before", async () => {
  const faulty = new FaultyStore(await formattedStore());
  const seq = await ReservedWriteSeq.open(faulty.store, 4n);
  let errors = 0;
  let availableCalls = 0;
  seq.attach({ onError: () => errors++, onAvailable: () => availableCalls++, onExhausted: () => assert.fail("exhausted") });
  faulty.cut("fail");
  const issued: bigint[] = [];
  while (seq.available()) issued.push(seq.next());
  assert.deepEqual(issued, [1n, 2n, 3n, 4n], "the first block is used up; nothing beyond it is issued");
  assert.equal(seq.available(), false);
  assert.throws(() => seq.next(), /would pass the reserved high-water mark/, "next() without a token is our bug");
  await sleep(600);
  assert.ok(errors >= 2, `the reservation was retried (${errors} failures in 600 ms)`);
  assert.ok(errors <= 12, `with back-off, not in a tight loop (${errors} failures in 600 ms)`);
  assert.equal(availableCalls, 0, "no tokens while the store is cut");
  faulty.restore();
  await until("tokens back", () => availableCalls === 1);
  assert.equal(seq.available(), true);
  const next = seq.next();
  assert.equal(next, 5n);
  assert.ok((await faulty.inner.readSeqHighWater()) >= next, "every token issued is below the durable mark");
  seq.close();
});

test("write seq - WRITE_SEQ_MAX is never reserved past nor issued past; reaching it is reported once", async () => {
  const store = await formattedStore();
  await store.raiseSeqHighWater(WRITE_SEQ_MAX - 3n);
  const seq = await ReservedWriteSeq.open(store, 1000n);
  const exhausted: string[] = [];
  seq.attach({ onExhausted: (reason) => exhausted.push(reason) });
  const issued: bigint[] = [];
  while (seq.available()) issued.push(seq.next());
  assert.deepEqual(issued, [WRITE_SEQ_MAX - 2n, WRITE_SEQ_MAX - 1n, WRITE_SEQ_MAX]);
  assert.equal(seq.available(), false);
  assert.equal(await store.readSeqHighWater(), WRITE_SEQ_MAX, "nothing reserved above the bound");
  assert.equal(exhausted.length, 1);
  assert.match(exhausted[0]!, /fencing tokens exhausted/);
  await sleep(50);
  assert.equal(exhausted.length, 1, "reported once");

  // A store already at the bound (or a recovered report above it) opens, and grants nothing that needs a token.
  const full = await ReservedWriteSeq.open(store, 1000n);
  let reported = 0;
  full.attach({ onExhausted: () => reported++ });
  assert.equal(full.available(), false);
  assert.equal(reported, 1);
  const above = await ReservedWriteSeq.open(await formattedStore(), 1000n);
  above.observe(WRITE_SEQ_MAX + 5n);
  assert.equal(above.available(), false);
});

test("write seq - a recovered write seq above the reserved block waits for a reservation above it", async () => {
  const store = await formattedStore();
  const seq = await ReservedWriteSeq.open(store, 10n);
  let availableCalls = 0;
  seq.attach({ onAvailable: () => availableCalls++ });
  seq.observe(500n);
  assert.equal(seq.available(), false);
  await until("tokens back", () => availableCalls === 1);
  assert.equal(seq.next(), 501n);
  assert.ok((await store.readSeqHighWater()) >= 501n);
});

test("write seq - close() stops the retries", async () => {
  const faulty = new FaultyStore(await formattedStore());
  const seq = await ReservedWriteSeq.open(faulty.store, 2n);
  let errors = 0;
  seq.attach({ onError: () => errors++ });
  faulty.cut("fail");
  seq.next();
  seq.next();
  assert.equal(seq.available(), false);
  await until("a failure", () => errors > 0);
  seq.close();
  const seen = errors;
  await sleep(300);
  assert.ok(errors <= seen + 1, "no retries after close");
  assert.equal(seq.pending, false);
});

test("store watch - a call that hangs for the bound is reported once, and the start race rejects", async () => {
  const faulty = new FaultyStore(await formattedStore());
  const reasons: string[] = [];
  const watch = new StoreWatch(faulty.store, 150, (reason) => reasons.push(reason));
  assert.equal(await watch.store.readSeqHighWater(), 0n, "calls pass through");
  faulty.cut("hang");
  const hanging = watch.store.raiseSeqHighWater(10n);
  const raced = Promise.race([hanging, watch.unreachable]).then(() => "resolved", (e: Error) => e.message);
  await sleep(100);
  assert.deepEqual(reasons, [], "not before the bound");
  await until("the report", () => reasons.length === 1);
  assert.match(reasons[0]!, /store is unreachable: store call raiseSeqHighWater has not answered/);
  assert.match(await raced, /store is unreachable/);
  faulty.restore();
  assert.equal(await hanging, 10n, "the call itself still completes");
  watch.close();
});

test("store watch - failures for the bound with no success between are reported; a success resets the run", async () => {
  const faulty = new FaultyStore(await formattedStore());
  const reasons: string[] = [];
  const watch = new StoreWatch(faulty.store, 200, (reason) => reasons.push(reason));
  const attempt = (): Promise<unknown> => watch.store.readSeqHighWater().catch(() => undefined);
  faulty.cut("fail");
  await attempt();
  await sleep(120);
  faulty.restore();
  await attempt(); // a success ends the run
  faulty.cut("fail");
  await sleep(120);
  await attempt();
  assert.deepEqual(reasons, [], "two short runs of failures are not an outage");
  await sleep(220);
  await attempt();
  assert.equal(reasons.length, 1);
  assert.match(reasons[0]!, /store calls have failed for \d+ ms/);
  await sleep(50);
  await attempt();
  assert.equal(reasons.length, 1, "reported once");
  watch.close();
});

test("store watch - after close() nothing is reported", async () => {
  const faulty = new FaultyStore(await formattedStore());
  const reasons: string[] = [];
  const watch = new StoreWatch(faulty.store, 50, (reason) => reasons.push(reason));
  faulty.cut("hang");
  const hanging = watch.store.readSlots();
  watch.close();
  await sleep(120);
  assert.deepEqual(reasons, []);
  faulty.restore();
  await hanging;
});

test("store watch - refusals only a reachable store gives (EINVAL, EEXIST) are not an outage", async () => {
  const store = await formattedStore();
  const reasons: string[] = [];
  const watch = new StoreWatch(store, 100, (reason) => reasons.push(reason));
  const bad = { rid: 1n, name: "x".repeat(5000), address: "a", pid: 0, pidStart: "", hostname: "h", greetedAtMs: 0, resumeKey: "", claimKey: "" };
  await assert.rejects(watch.store.insertClient(bad), /EINVAL/);
  await sleep(150);
  await assert.rejects(watch.store.insertClient(bad), /EINVAL/);
  await assert.rejects(watch.store.format({ clusterId: "t", slots: [{ slot: 0, host: "127.0.0.1", port: 7411 }], secretDigest: null, formattedAtMs: 0 }), /EEXIST/);
  assert.deepEqual(reasons, []);
  watch.close();
});
