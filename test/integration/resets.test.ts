// Connections cut by a proxy while clients contend for a guarded resource (issue 4 §1, DESIGN §8):
// exactly-once delivery to the same server across socket reconnects — no lost update, no double writer,
// no fencing, nobody stuck.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { Worker, freePort, startUp, tempDir } from "../support/processes.js";
import { CuttingProxy } from "../support/proxy.js";
import { adminQuery } from "../../src/client/admin.js";
import { Command } from "../../src/protocol/messages.js";

const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

test("resets - cut sockets resume exactly once: a guarded counter loses nothing and no one is fenced", async () => {
  const dir = tempDir("resets");
  const port = await freePort();
  const up = await startUp(dir.path, port);
  const proxy = await CuttingProxy.start("127.0.0.1", port);
  const workers = [new Worker(), new Worker(), new Worker()];
  cleanups.push(async () => {
    for (const w of workers) await w.kill();
    await proxy.close();
    await up.kill("SIGTERM");
    dir.remove();
  });
  // Two clients go through the proxy, one connects directly: hand-offs cross the cuts.
  await workers[0]!.ok("connect", { servers: [proxy.address], name: "proxied-0" });
  await workers[1]!.ok("connect", { servers: [proxy.address], name: "proxied-1" });
  await workers[2]!.ok("connect", { servers: [up.address], name: "direct" });
  const file = join(dir.path, "counter.json");
  const perClient = 150;
  const running = Promise.all(workers.map((w) => w.ok("counter", { key: "reset/1", file, count: perClient }, 90_000)));
  let cuts = 0;
  let done = false;
  void running.finally(() => (done = true));
  while (!done && cuts < 80) {
    await new Promise((r) => setTimeout(r, 40));
    if (proxy.cut() > 0) cuts++;
  }
  await running;
  console.log(`resets: ${cuts} cuts while ${workers.length} clients made ${workers.length * perClient} guarded increments`);
  assert.ok(cuts >= 3, `only ${cuts} cuts happened`);
  const state = JSON.parse(readFileSync(file, "utf8")) as { value: number };
  assert.equal(state.value, workers.length * perClient, "no lost update, no double writer");
  const status = (await adminQuery({ servers: [up.address] }, Command.ADMIN_STATUS)) as {
    clients: { name: string }[];
    fences: unknown[];
  };
  assert.deepEqual(status.clients.map((c) => c.name).sort(), ["direct", "proxied-0", "proxied-1"]);
  assert.deepEqual(status.fences, [], "reconnecting within the window fences no one");
  for (const w of workers) assert.equal(w.events.filter((e) => e.event === "fenced").length, 0);
});
