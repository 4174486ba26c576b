// High availability with real `keylock member` processes on 127.0.0.1 (issue 5): election, silent and
// graceful failover with fencing of the previous leader, rejoining, two-member clusters, and
// configurations that are refused; the three-member scenario runs on SQLite and on PostgreSQL (a scratch
// database on 127.0.0.1:5432, skipped with the reason when unreachable, a failure when CI=true).
// Members use --heartbeat-timeout-ms 2000 so failovers stay short. KEYLOCK_TEST_VERBOSE=1 prints every
// member line.
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { adminQuery } from "../../src/client/admin.js";
import { Command } from "../../src/protocol/messages.js";
import { freeMemberPort, runKeylock, startCluster, tempDir, type TestCluster } from "../support/processes.js";
import { openStore } from "../../src/store/open.js";
import { processStart } from "../../src/io/peer-process.js";
import { reportUnreachable, scratchDatabase } from "../support/postgres.js";

const HEARTBEAT_TIMEOUT_MS = 2000;
/** Silent loss: the heartbeat timeout, an election, fencing and a server start, with room for a slow machine. */
const SILENT_FAILOVER_BOUND_MS = HEARTBEAT_TIMEOUT_MS + 4000;
/** Graceful exit: DESIGN §7 targets 500 ms; the test allows for a loaded machine. */
const GRACEFUL_FAILOVER_BOUND_MS = 2000;

interface Status {
  term: bigint | number;
  leader: { slot: number; address: string } | null;
  members: { slot: number; address: string; role: string }[];
}

/**
 * Status through one member. A follower that has not heard the new leader's first heartbeat yet answers
 * "not the leader; no leader known yet" (correctly): ask again for a bounded time.
 */
async function status(cluster: TestCluster, via: number): Promise<Status> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    try {
      return (await adminQuery({ servers: [cluster.servers[via]!] }, Command.ADMIN_STATUS));
    } catch (error) {
      if (Date.now() > deadline || !/no leader known yet/.test((error as Error).message)) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

function verbose(slot: number, line: string): void {
  if (process.env.KEYLOCK_TEST_VERBOSE) console.log(`[member ${slot}] ${line}`);
}

/** Fence invocations recorded by the --fence-command below: "rid reason address". */
function fenceLog(file: string): string[] {
  return existsSync(file) ? readFileSync(file, "utf8").split("\n").filter(Boolean) : [];
}

/**
 * The three-member scenario, on SQLite and on PostgreSQL: elect, agree, SIGKILL the leader, fence it,
 * rejoin without deposing, SIGTERM for a fast takeover.
 */
async function threeMemberScenario(store: string | undefined, fencing: "command" | "local"): Promise<void> {
  const dir = tempDir("members");
  const fenceFile = join(dir.path, "fenced.log");
  const t0 = performance.now();
  const cluster = await startCluster({
    ...(store === undefined ? { store: `sqlite:${join(dir.path, "keylock.db")}` } : { store }),
    members: 3,
    heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS,
    ...(fencing === "command"
      ? { fenceCommand: `echo "$KEYLOCK_FENCE_RID $KEYLOCK_FENCE_REASON $KEYLOCK_FENCE_ADDRESS" >> ${fenceFile}` }
      : {}),
    onLine: verbose,
  });
  try {
    const first = await cluster.waitForServing(0, 20_000);
    console.log(`members: slot ${first.slot} serves ${Math.round(first.atMs - t0)} ms after the members started`);
    assert.equal(cluster.servingLines().length, 1, "exactly one member serves");

    // Status through the leader and through a follower (redirected by ENOTLEADER) agree.
    const follower = [0, 1, 2].find((s) => s !== first.slot)!;
    const [viaLeader, viaFollower] = [await status(cluster, first.slot), await status(cluster, follower)];
    assert.deepEqual(viaFollower.leader, viaLeader.leader);
    assert.equal(String(viaFollower.term), String(viaLeader.term));
    assert.deepEqual(viaLeader.leader, { slot: first.slot, address: cluster.servers[first.slot] });
    assert.deepEqual(
      viaLeader.members.map((m) => [m.slot, m.address, m.role === "leader"]),
      [0, 1, 2].map((s) => [s, cluster.servers[s], s === first.slot]),
    );
    const cli = await runKeylock(["status", "--json", "--servers", cluster.servers[follower]!]);
    assert.equal(cli.code, 0, cli.stderr);
    assert.deepEqual((JSON.parse(cli.stdout) as Status).leader, viaLeader.leader);
    const human = await runKeylock(["status", "--servers", cluster.servers[follower]!]);
    assert.match(human.stdout, /SLOT\s+ADDRESS\s+ROLE\s+TERM/);
    assert.match(human.stdout, /heartbeat gaps of 1 s or more seen by slot \d/);

    // Silent loss: SIGKILL the leader; another member fences it and serves within the bound.
    const oldRid = cluster.member(first.slot)!.rid!;
    const killedAt = performance.now();
    await cluster.kill(first.slot, "SIGKILL");
    const second = await cluster.waitForServing(killedAt, SILENT_FAILOVER_BOUND_MS);
    const silentMs = Math.round(second.atMs - killedAt);
    console.log(`members: SIGKILL of slot ${first.slot} -> slot ${second.slot} serving after ${silentMs} ms`);
    assert.notEqual(second.slot, first.slot);
    if (fencing === "command") {
      assert.ok(
        fenceLog(fenceFile).includes(`${oldRid} quorum_block_leader ${cluster.servers[first.slot]}`),
        `the new leader fenced the old one: ${JSON.stringify(fenceLog(fenceFile))}`,
      );
    } else {
      assert.match(cluster.output(second.slot), new RegExp(`fenced slot ${first.slot}'s previous leader ${oldRid}`));
    }
    const afterKill = await status(cluster, second.slot);
    assert.ok(BigInt(afterKill.term) > BigInt(viaLeader.term), "a new term serves (B22)");

    // The killed member rejoins as a follower and does not depose the leader.
    const rejoinedAt = performance.now();
    await cluster.restart(first.slot);
    await new Promise((r) => setTimeout(r, HEARTBEAT_TIMEOUT_MS + 1000));
    assert.equal(cluster.servingLines().filter((s) => s.atMs > rejoinedAt).length, 0, "nobody else started serving");
    const afterRejoin = await status(cluster, first.slot);
    assert.equal(String(afterRejoin.term), String(afterKill.term), "the term did not move");
    assert.equal(afterRejoin.leader?.slot, second.slot);

    // Graceful exit: SIGTERM the leader; it records STOP and resigns, so the takeover is fast and
    // nobody needs to fence it.
    const leaderRid = cluster.member(second.slot)!.rid!;
    const termAt = performance.now();
    const code = cluster.kill(second.slot, "SIGTERM");
    const third = await cluster.waitForServing(termAt, GRACEFUL_FAILOVER_BOUND_MS);
    const gracefulMs = Math.round(third.atMs - termAt);
    console.log(`members: SIGTERM of slot ${second.slot} -> slot ${third.slot} serving after ${gracefulMs} ms`);
    assert.equal(await code, 0, "a member leaving on SIGTERM exits 0");
    assert.notEqual(third.slot, second.slot);
    if (fencing === "command") {
      assert.ok(!fenceLog(fenceFile).some((l) => l.startsWith(leaderRid)), "a leader that resigned is not fenced");
    }
    assert.doesNotMatch(cluster.output(third.slot), new RegExp(`fencing slot ${second.slot}'s previous leader`));
  } finally {
    await cluster.stop();
    dir.remove();
  }
}

describe("members on SQLite", () => {
  test("members - three members elect one leader; SIGKILL fails over with fencing; rejoin keeps the leader; SIGTERM hands over fast", { timeout: 90_000 }, async () => {
    await threeMemberScenario(undefined, "command");
  });

  test("members - a two-member cluster elects, and the survivor takes over (one vote is a majority)", { timeout: 60_000 }, async () => {
    const dir = tempDir("two-members");
    const cluster = await startCluster({
      store: `sqlite:${join(dir.path, "keylock.db")}`,
      members: 2,
      heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS,
      onLine: verbose,
    });
    try {
      const first = await cluster.waitForServing(0, 20_000);
      // With one vote a majority, the leader may serve before the other member has heard from it; let
      // a few heartbeats pass so this is a failover, not the other member's first election.
      await new Promise((r) => setTimeout(r, 500));
      const killedAt = performance.now();
      await cluster.kill(first.slot, "SIGKILL");
      const second = await cluster.waitForServing(killedAt, SILENT_FAILOVER_BOUND_MS);
      console.log(`members: two members, SIGKILL of slot ${first.slot} -> slot ${second.slot} serving after ${Math.round(second.atMs - killedAt)} ms`);
      assert.equal(second.slot, 1 - first.slot);
      // The local agent fenced the dead leader by the pid in its slot events (already gone: fenced at once).
      assert.match(cluster.output(second.slot), /fenced slot \d's previous leader/);
      const s = await status(cluster, second.slot);
      assert.equal(s.leader?.slot, second.slot);
    } finally {
      await cluster.stop();
      dir.remove();
    }
  });
});

describe("members - fencing a previous leader by the pid it recorded in the store", () => {
  test("members - a frozen leader is SIGKILLed by the local agent through the pid in its slot events; no pid files", { timeout: 60_000, skip: process.platform !== "linux" ? "the local agent needs /proc" : false }, async () => {
    const dir = tempDir("frozen-leader");
    const storePath = join(dir.path, "keylock.db");
    const cluster = await startCluster({ store: `sqlite:${storePath}`, members: 2, heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS, onLine: verbose });
    try {
      const first = await cluster.waitForServing(0, 20_000);
      await new Promise((r) => setTimeout(r, 500));
      const leader = cluster.member(first.slot)!;
      const store = await openStore(`sqlite:${storePath}`);
      try {
        const events = (await store.readSlots()).find((r) => r.slot === first.slot)?.events;
        assert.equal(events?.ELECT?.pid, leader.pid, "the leader recorded its own pid with its ELECT");
        assert.equal(events?.ELECT?.pidStart, processStart(leader.pid));
      } finally {
        await store.close();
      }
      // Frozen, not dead: only a fence that kills the right pid lets it go.
      const frozenAt = performance.now();
      leader.process.child.kill("SIGSTOP");
      const second = await cluster.waitForServing(frozenAt, SILENT_FAILOVER_BOUND_MS + 5000);
      assert.equal(second.slot, 1 - first.slot);
      assert.equal(await leader.process.exited, -1);
      assert.equal(leader.process.child.signalCode, "SIGKILL", "the new leader's local agent killed the frozen leader");
      assert.match(cluster.output(second.slot), new RegExp(`fenced slot ${first.slot}'s previous leader`));
      assert.deepEqual(readdirSync(dir.path).filter((n) => n.endsWith(".members")), [], "no pid files next to the store");
    } finally {
      await cluster.stop();
      dir.remove();
    }
  });
});

describe("members - bad configurations are refused with a message naming the problem", { timeout: 60_000 }, () => {
  const dir = tempDir("bad-config");
  after(() => dir.remove());

  test("members - format refuses two slots with one address", async () => {
    const port = await freeMemberPort();
    const r = await runKeylock(["format", "--store", `sqlite:${join(dir.path, "dup.db")}`, "--slot", `0=127.0.0.1:${port}`, "--slot", `1=127.0.0.1:${port}`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`slots 0 and 1 share the address 127\\.0\\.0\\.1:${port}`));
    assert.ok(!existsSync(join(dir.path, "dup.db")), "nothing was created");
  });

  test("members - format refuses slot 15 and a slot given twice", async () => {
    const r = await runKeylock(["format", "--store", `sqlite:${join(dir.path, "s15.db")}`, "--slot", "15=127.0.0.1:7000"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--slot 15=127\.0\.0\.1:7000: slot number must be 0\.\.14, not 15/);
    const twice = await runKeylock(["format", "--store", `sqlite:${join(dir.path, "twice.db")}`, "--slot", "1=127.0.0.1:7000", "--slot", "1=127.0.0.1:7001"]);
    assert.equal(twice.code, 1);
    assert.match(twice.stderr, /slot 1 is given twice/);
  });

  test("members - a member for a slot the config does not have is refused, listing the configured slots", async () => {
    const store = `sqlite:${join(dir.path, "three.db")}`;
    const ports = [await freeMemberPort(), await freeMemberPort(), await freeMemberPort()];
    const f = await runKeylock(["format", "--store", store, ...ports.flatMap((p, i) => ["--slot", `${i}=127.0.0.1:${p}`])]);
    assert.equal(f.code, 0, f.stderr);
    const r = await runKeylock(["member", "--store", store, "--slot", "5"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`slot 5 is not configured .*configured slots: 0 \\(127\\.0\\.0\\.1:${ports[0]}\\), 1 \\(127\\.0\\.0\\.1:${ports[1]}\\), 2`));
    const outOfRange = await runKeylock(["member", "--store", store, "--slot", "15"]);
    assert.equal(outOfRange.code, 1);
    assert.match(outOfRange.stderr, /--slot must be an integer from 0 to 14, not "15"/);
  });

  test("members - out-of-range and unknown member flags are refused naming the flag", async () => {
    const store = `sqlite:${join(dir.path, "flags.db")}`;
    const r = await runKeylock(["member", "--store", store, "--slot", "0", "--heartbeat-timeout-ms", "100"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--heartbeat-timeout-ms must be an integer from 2000 to 60000, not "100"/);
    const unknown = await runKeylock(["member", "--store", store, "--slot", "0", "--heartbeat-ms", "3000"]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /unknown option '--heartbeat-ms'/);
    const unformatted = await runKeylock(["member", "--store", `sqlite:${join(dir.path, "empty.db")}`, "--slot", "0"]);
    assert.equal(unformatted.code, 1);
    assert.match(unformatted.stderr, /is not formatted; run "keylock format" first/);
  });

  test("members - a second member in one slot is refused (the slot's address is in use)", async () => {
    const d = tempDir("same-slot");
    const cluster = await startCluster({ store: `sqlite:${join(d.path, "keylock.db")}`, members: 1, heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS });
    try {
      const r = await runKeylock(["member", "--store", cluster.store, "--slot", "0"]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /slot 0's address 127\.0\.0\.1:\d+ is in use: is another member running in slot 0\?/);
    } finally {
      await cluster.stop();
      d.remove();
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// PostgreSQL: the same scenario with the members on another engine, fencing with the local agent.

const database = await scratchDatabase("members");

describe("members on PostgreSQL", () => {
  if ("unreachable" in database) {
    reportUnreachable(database.unreachable, "members (postgres) - the PostgreSQL server is reachable");
    if (process.env.CI !== "true") test("members (postgres) - three members fail over on PostgreSQL", { skip: database.unreachable }, () => undefined);
    return;
  }
  after(() => database.drop());

  test("members (postgres) - three members elect one leader; SIGKILL fails over with local fencing; rejoin keeps the leader; SIGTERM hands over fast", { timeout: 90_000 }, async () => {
    await threeMemberScenario(database.url, "local");
  });
});
