// A holder that re-acquires its cached lock in a loop must not starve the event loop (DESIGN §7, issue 11):
// both clients live in this one process, so before the fix the loop never read the invalidation.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect, type LockClient } from "../../src/index.js";
import { SYNC_SETTLES_PER_TURN_MAX } from "../../src/client/client.js";
import { freePort, startUp, tempDir, type KeylockUp } from "../support/processes.js";

let up: KeylockUp;
let dir: { path: string; remove(): void };

before(async () => {
  dir = tempDir("liveness");
  up = await startUp(dir.path, await freePort());
});

after(async () => {
  await up.kill("SIGTERM");
  dir.remove();
});

test("cached re-acquire - a loop of cached acquires yields, so a conflicting client is granted while it runs", async () => {
  const holder: LockClient = await connect({ servers: [up.address], name: "holder" });
  const waiter: LockClient = await connect({ servers: [up.address], name: "waiter" });
  try {
    (await holder.acquire("hot", "write")).release(); // cached from now on
    let waiterGranted = false;
    const waiting = waiter.acquire("hot", "write").then((handle) => {
      waiterGranted = true;
      handle.release();
    });
    // Bounded: stops after 5 s of wall time or once the waiter got the lock.
    const deadline = Date.now() + 5_000;
    let loops = 0;
    while (!waiterGranted && Date.now() < deadline) {
      const handle = await holder.acquire("hot", "write");
      handle.release();
      loops++;
    }
    assert.ok(waiterGranted, `the waiter was not granted while the holder looped (${loops} cached acquires)`);
    assert.ok(loops > 0);
    await waiting;
    // The holder gets the lock back afterwards (a round trip now, since the waiter took it).
    (await holder.acquire("hot", "write")).release();
  } finally {
    await Promise.all([holder.close(), waiter.close()]);
  }
});

test("cached re-acquire - a loop of immediate EAGAINs yields too", async () => {
  const holder: LockClient = await connect({ servers: [up.address], name: "holder2" });
  const other = holder; // its own write handle makes every nonblock try fail locally, synchronously
  try {
    const held = await holder.acquire("busy", "write");
    let timerFired = false;
    setTimeout(() => (timerFired = true), 20);
    const deadline = Date.now() + 5_000;
    let tries = 0;
    while (!timerFired && Date.now() < deadline) {
      await other.acquire("busy", "read", { nonblock: true }).then(
        (h) => h.release(),
        (error: { code?: string }) => assert.equal(error.code, "EAGAIN"),
      );
      tries++;
    }
    assert.ok(timerFired, `a 20 ms timer did not fire during ${tries} nonblock tries`);
    held.release();
  } finally {
    await holder.close();
  }
});

test("cached re-acquire - between two event-loop turns at most about SYNC_SETTLES_PER_TURN_MAX cached acquires settle", async () => {
  const client: LockClient = await connect({ servers: [up.address], name: "turns" });
  try {
    (await client.acquire("turns", "write")).release(); // cached from now on
    // Count the acquires that complete between consecutive check phases of the event loop: without the
    // yield, one run would be all of them (the loop would live on microtasks only).
    const total = 20 * SYNC_SETTLES_PER_TURN_MAX;
    let done = 0;
    let last = 0;
    let stop = false;
    const runs: number[] = [];
    const tick = (): void => {
      runs.push(done - last);
      last = done;
      if (!stop) setImmediate(tick);
    };
    setImmediate(tick);
    for (let i = 0; i < total; i++) {
      (await client.acquire("turns", "write")).release();
      done++;
    }
    stop = true;
    const longest = Math.max(...runs, done - last);
    assert.ok(runs.length >= total / (2 * SYNC_SETTLES_PER_TURN_MAX), `only ${runs.length} event-loop turns during ${total} cached acquires`);
    assert.ok(longest <= 2 * SYNC_SETTLES_PER_TURN_MAX + 2, `${longest} cached acquires settled without the event loop turning`);
    assert.equal(client.stats().cachedGrants, total);
  } finally {
    await client.close();
  }
});
