// Public client classes keep their state in #private fields (issue 10): a property assigned on a LockClient,
// a LockHandle or a CoherentCache is an unrelated property, and cannot change what the client does.
import { EventEmitter } from "node:events";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { CoherentCache, connect, type LockClient } from "../../src/index.js";
import { freePort, startUp, tempDir, type KeylockUp } from "../support/processes.js";

let up: KeylockUp;
let dir: { path: string; remove(): void };

before(async () => {
  dir = tempDir("private-state");
  up = await startUp(dir.path, await freePort());
});

after(async () => {
  await up.kill("SIGTERM");
  dir.remove();
});

/** The names the client used to keep its state under (before issue 10) and its former internal methods. */
const FORMER_INTERNALS = [
  "machine", "waiters", "lockRequests", "invalidations", "nextInvalidationId", "generation", "nextWaiterId",
  "closed", "fencedError", "settledNow", "syncSettles", "turnWatched", "shutDown", "connection", "logger",
  "reconnects", "cachedGrants", "serverGrants", "invalidationCount", "requestSentAt", "idleReleases",
  "grantLatencies", "options", "world", "apply", "onMessage", "settleSoon", "_release", "_valid",
];

test("private state - a LockClient shows no enumerable own state beyond what EventEmitter itself keeps", async () => {
  const client = await connect({ servers: [up.address], name: "keys" });
  try {
    const emitterKeys = new Set(Object.keys(new EventEmitter()));
    assert.deepEqual(Object.keys(client).filter((k) => !emitterKeys.has(k)), []);
    for (const name of FORMER_INTERNALS) assert.equal(name in client, false, `client.${name} is reachable`);
    const handle = await client.acquire("private/keys", "write");
    assert.deepEqual(Object.keys(handle), []);
    assert.deepEqual([handle.key, handle.mode, handle.isValid, handle.isReleased], ["private/keys", "write", true, false]);
    assert.equal(typeof handle.writeSeq, "bigint");
    handle.release();
  } finally {
    await client.close();
  }
});

test("private state - assigning the former internal fields on a LockClient cannot break it", async () => {
  const holder = await connect({ servers: [up.address], name: "vandalised" });
  const other = await connect({ servers: [up.address], name: "other" });
  try {
    (await holder.acquire("private/k", "write")).release(); // cached from now on
    const vandal = holder as unknown as Record<string, unknown>;
    for (const name of FORMER_INTERNALS) vandal[name] = name === "invalidations" ? [] : null;
    assert.equal(holder.stats().cachedLocks, 1);
    // The cached path still works...
    for (let i = 0; i < 3; i++) (await holder.acquire("private/k", "write")).release();
    // ...an invalidation is still handled (the other client is granted the key)...
    const held = await holder.acquire("private/k", "write");
    const waiting = other.acquire("private/k", "write");
    await new Promise((resolve) => setTimeout(resolve, 20));
    held.release();
    (await waiting).release();
    // ...and the holder gets the key back from the server.
    const again = await holder.acquire("private/k", "read");
    assert.equal(again.isValid, true);
    again.release();
    assert.equal(holder.stats().invalidations, 1);
  } finally {
    await Promise.all([holder.close(), other.close()]);
  }
});

test("private state - assigning properties on a LockHandle cannot change the lock it releases", async () => {
  const client = await connect({ servers: [up.address], name: "handles" });
  try {
    const a = await client.acquire("private/a", "write");
    const b = await client.acquire("private/b", "write");
    const vandal = a as unknown as Record<string, unknown>;
    for (const name of ["released", "client", "waiterId", "generation"]) vandal[name] = name === "released" ? true : null;
    // The public fields are read-only accessors: assigning them throws instead of lying to the holder.
    assert.throws(() => (vandal.key = "private/b"), TypeError);
    assert.throws(() => (vandal.writeSeq = 0n), TypeError);
    assert.equal(a.isReleased, false);
    a.release();
    assert.throws(() => a.release(), /already released/);
    // a released private/a, not private/b: a nonblock write on b fails locally, one on a succeeds.
    await assert.rejects(client.acquire("private/b", "write", { nonblock: true }), { code: "EAGAIN" });
    (await client.acquire("private/a", "write", { nonblock: true })).release();
    b.release();
  } finally {
    await client.close();
  }
});

test("private state - a CoherentCache keeps working after properties are assigned on it", async () => {
  const client: LockClient = await connect({ servers: [up.address], name: "cache" });
  try {
    const saved: [string, number][] = [];
    const cache = new CoherentCache<number>(client, { load: () => 1, save: (key, value) => void saved.push([key, value]) });
    assert.deepEqual(Object.keys(cache), []);
    const vandal = cache as unknown as Record<string, unknown>;
    for (const name of ["entries", "client", "options", "loads", "onInvalidate", "onFenced"]) vandal[name] = null;
    assert.equal(await cache.get("private/c"), 1);
    assert.equal(await cache.update("private/c", (v) => v + 1), 2);
    assert.deepEqual(cache.stats(), { values: 1, dirty: 1, loads: 1 });
    await cache.flush();
    assert.deepEqual(saved, [["private/c", 2]]);
    cache.close();
  } finally {
    await client.close();
  }
});
