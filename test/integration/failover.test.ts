// A three-member cluster keeps serving locks through leader loss (issue 5 "done when", DESIGN §8): real
// `keylock member` processes and client processes on 127.0.0.1; the leader is SIGKILLed under load and
// later exits gracefully; clients follow the new leader, recover their locks, and a guarded counter loses
// nothing with tokens that only grow. Members use --heartbeat-timeout-ms 2000.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { MemberCluster } from "../support/member-cluster.js";
import { adminQuery } from "../../src/client/admin.js";
import { Command } from "../../src/protocol/messages.js";
import { keyFromBytes, keyToText } from "../../src/core/keys.js";
import { Worker, tempDir } from "../support/processes.js";
import { reportUnreachable, scratchDatabase } from "../support/postgres.js";

const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function keepsServingThroughFailovers(store: string | undefined): Promise<void> {
  const dir = tempDir("failover");
  const cluster = await MemberCluster.format({ members: 3, heartbeatTimeoutMs: 2000, ...(store === undefined ? {} : { store }) });
  const workers = [new Worker(), new Worker(), new Worker()];
  cleanups.push(async () => {
    for (const w of workers) await w.kill();
    await cluster.close();
    dir.remove();
  });
  await cluster.startAll();
  const first = await cluster.probeLeader(20_000);
  const servers = cluster.addresses;
  for (const [i, w] of workers.entries()) await w.ok("connect", { servers, name: `c${i}`, connectTimeoutMs: 20_000 });

  // A lock held across both failovers, and a waiter that must keep waiting for it.
  const held = await workers[0]!.ok("acquire", { key: "held/1", mode: "write" });

  const file = join(dir.path, "counter.json");
  const perClient = 4000; // long enough to run across both failovers
  const load = Promise.all(workers.map((w) => w.ok("counter", { key: "hot/1", file, count: perClient }, 120_000)));
  load.catch(() => undefined); // awaited below; do not report it twice

  await new Promise((r) => setTimeout(r, 300));
  // Read without the lock: a writer may be mid-write, so retry a torn read.
  const progress = (): number => {
    for (;;) {
      try {
        return (JSON.parse(readFileSync(file, "utf8")) as { value: number }).value;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") return 0;
      }
    }
  };
  const beforeKill = progress();
  await cluster.kill(first.slot, "SIGKILL");
  const second = await cluster.probeLeader(20_000, first.slot);
  assert.notEqual(second.slot, first.slot);
  await cluster.start(first.slot); // rejoins as a follower

  await new Promise((r) => setTimeout(r, 300));
  const beforeResign = progress();
  await cluster.kill(second.slot, "SIGTERM"); // graceful: resigns, fast takeover
  const third = await cluster.probeLeader(20_000, second.slot);
  assert.notEqual(third.slot, second.slot);

  await load;
  // Every client followed both leader changes and reported its locks to each new server.
  for (const w of workers) await w.waitForEvent((e) => e.event === "recovered" && (e.info as { serverTerm: string }).serverTerm !== undefined && w.events.filter((x) => x.event === "recovered").length >= 2);
  const state = JSON.parse(readFileSync(file, "utf8")) as { value: number };
  assert.equal(state.value, workers.length * perClient, "no lost update and no double writer across failovers");
  assert.ok(beforeKill < beforeResign && beforeResign < state.value, `the load ran across both failovers (${beforeKill}, ${beforeResign}, ${state.value})`);

  // The lock held since before the first failover is still held by c0 on the new leader.
  const rows = (await adminQuery({ servers }, Command.ADMIN_LOCKS)) as { key: Uint8Array; mode: string; state: string }[];
  const heldRows = rows.filter((r) => keyToText(keyFromBytes(r.key)) === "held/1");
  assert.deepEqual(heldRows.map((r) => [r.mode, r.state]), [["write", "granted"]]);
  await workers[1]!.ok("acquireLater", { key: "held/1", mode: "read", tag: "r" });
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(workers[1]!.events.filter((e) => e.event === "acquired" && e.tag === "r").length, 0, "still excluded by c0's write");
  await workers[0]!.ok("release", { handle: held.handle });
  const granted = await workers[1]!.waitForEvent((e) => e.event === "acquired" && e.tag === "r");
  assert.equal(granted.error, undefined);
  for (const w of workers) assert.equal(w.events.filter((e) => e.event === "fenced").length, 0, "no client was fenced");
  for (const w of workers) await w.ok("close", {}, 20_000);
}

test("failover (sqlite) - the cluster keeps serving locks through a SIGKILLed and a resigning leader", () =>
  keepsServingThroughFailovers(undefined));

const database = await scratchDatabase("failover");
if ("unreachable" in database) {
  reportUnreachable(database.unreachable, "failover (postgres) - the PostgreSQL server is reachable");
  if (process.env.CI !== "true") test("failover (postgres) - keeps serving locks", { skip: database.unreachable }, () => undefined);
} else {
  after(() => database.drop());
  test("failover (postgres) - the cluster keeps serving locks through a SIGKILLed and a resigning leader", () =>
    keepsServingThroughFailovers(database.url));
}
