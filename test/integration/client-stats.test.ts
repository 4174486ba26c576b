// client.stats() (DESIGN §6, issue 12): cached locks, waiters, cached and server grants, invalidations and
// a grant-latency summary, against a real embedded server on 127.0.0.1.
import { test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../../src/index.js";
import { startEmbedded } from "../../src/runtime/embedded.js";
import { freePort, tempDir } from "../support/processes.js";

test("stats - counts cached and server grants, waiters, invalidations, and summarises grant latency", { timeout: 30_000 }, async () => {
  const dir = tempDir("client-stats");
  const embedded = await startEmbedded({ dir: dir.path, host: "127.0.0.1", port: await freePort(), reconnectTimeoutMs: 20_000, log: () => undefined });
  const a = await connect({ servers: [embedded.address], name: "stats-a" });
  const b = await connect({ servers: [embedded.address], name: "stats-b" });
  try {
    const empty = a.stats();
    assert.deepEqual(empty, {
      cachedLocks: 0,
      waiters: 0,
      reconnects: 0,
      cachedGrants: 0,
      serverGrants: 0,
      invalidations: 0,
      grantLatencyMs: { count: 0, mean: 0, p50: 0, p99: 0, max: 0 },
    });
    for (let i = 0; i < 5; i++) (await a.acquire(`stats/${i}`, "write")).release();
    for (let i = 0; i < 10; i++) (await a.acquire("stats/0", "read")).release(); // cached: write permits read
    const held = await a.acquire("stats/0", "write");
    const waiting = b.acquire("stats/0", "read"); // a must downgrade: an invalidation, and a waiter in b
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(b.stats().waiters, 1);
    held.release();
    (await waiting).release();

    const s = a.stats();
    assert.equal(s.cachedLocks, 5);
    assert.equal(s.waiters, 0);
    assert.equal(s.serverGrants, 5);
    assert.equal(s.cachedGrants, 11);
    assert.equal(s.invalidations, 1);
    assert.equal(s.reconnects, 0);
    const l = s.grantLatencyMs;
    assert.equal(l.count, 5);
    assert.ok(l.mean > 0 && l.p50 > 0 && l.p50 <= l.p99 && l.p99 <= l.max, JSON.stringify(l));
    assert.equal(b.stats().serverGrants, 1);
  } finally {
    await a.close();
    await b.close();
    await embedded.stop();
    dir.remove();
  }
});
