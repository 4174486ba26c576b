// Grant latency (runtime/server.ts, runtime/metrics.ts): a grant decided while its request is handled and
// one that waited for an invalidation are both observed, once each, in the granted mode's histogram; a
// trylock refused at once leaves nothing behind.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { connect } from "../../src/index.js";
import { startEmbedded } from "../../src/runtime/embedded.js";
import { freePort, tempDir } from "../support/processes.js";

const cleanups: (() => Promise<unknown> | void)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

test("grant latency counts immediate and queued grants once each", async () => {
  const dir = tempDir("grant-latency");
  const port = await freePort();
  const server = await startEmbedded({ dir: dir.path, host: "127.0.0.1", port, reconnectTimeoutMs: 20_000, fenceCommand: "true", log: () => undefined });
  cleanups.push(async () => {
    await server.stop();
    dir.remove();
  });
  const count = async (mode: string): Promise<number> => (await server.member.metrics.value("keylock_grant_latency_seconds_count", { mode })) ?? 0;
  const a = await connect({ servers: [`127.0.0.1:${port}`], name: "a" });
  const b = await connect({ servers: [`127.0.0.1:${port}`], name: "b" });
  cleanups.push(() => a.close());
  cleanups.push(() => b.close());

  const held = await a.acquire("latency/1", "write"); // granted at once
  assert.equal(await count("write"), 1);
  await assert.rejects(b.acquire("latency/1", "write", { nonblock: true })); // refused at once: no grant
  assert.equal(await count("write"), 1);
  const waiting = b.acquire("latency/1", "write"); // queued behind a's invalidation
  await new Promise((resolve) => setTimeout(resolve, 50));
  held.release();
  (await waiting).release();
  assert.equal(await count("write"), 2);
  assert.equal(await count("read"), 0);
});
