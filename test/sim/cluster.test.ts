// The cluster simulator (sim/cluster.ts): real member drivers (runtime/member.ts; the leader's member
// starts the real LockServerRuntime) and real LockClients in the simulated world, under member crashes,
// partitions (an isolated old leader still reachable by clients), store faults, cuts and clock skew. KEYLOCK_CLUSTER_SEEDS
// / KEYLOCK_CLUSTER_BASE change the range; KEYLOCK_SEED=S replays one seed and prints its whole trace.
import { test } from "node:test";
import assert from "node:assert/strict";
import { formatClusterViolation, runClusterSeed, type ClusterOptions } from "../../sim/cluster.js";
import { envInteger } from "../support/prng.js";

const SEEDS = envInteger("KEYLOCK_CLUSTER_SEEDS", 200);
const BASE = envInteger("KEYLOCK_CLUSTER_BASE", 1);
const REPLAY = process.env.KEYLOCK_SEED;

async function runMany(from: number, count: number, options: ClusterOptions = {}): Promise<{ failures: string[]; totals: Record<string, number> }> {
  const failures: string[] = [];
  const totals: Record<string, number> = { events: 0, virtualS: 0 };
  for (let seed = from; seed < from + count; seed++) {
    const result = await runClusterSeed(seed, options);
    totals.events! += result.events;
    totals.virtualS! += result.virtualUs / 1e6;
    for (const [k, v] of Object.entries(result.cluster)) totals[k] = k === "maxTerm" ? Math.max(totals[k] ?? 0, v) : (totals[k] ?? 0) + v;
    if (result.violation !== undefined) {
      const line = formatClusterViolation(result, options);
      console.log(line);
      failures.push(line);
    }
  }
  totals.virtualS = Math.round(totals.virtualS!);
  return { failures, totals };
}

if (REPLAY !== undefined && REPLAY !== "") {
  test(`cluster sim - replay seed ${REPLAY}`, async () => {
    const seed = envInteger("KEYLOCK_SEED", 0);
    const result = await runClusterSeed(seed, { keepTrace: true });
    for (const line of result.trace ?? []) console.log(line);
    console.log(`cluster sim: seed ${seed}, ${result.events} events, ${result.virtualUs} virtual us, hash ${result.traceHash}`);
    console.log(JSON.stringify(result.cluster));
    if (result.violation !== undefined) assert.fail(formatClusterViolation(result));
  });
} else {
  test(`cluster sim - seeds ${BASE}..${BASE + SEEDS - 1} keep every invariant and converge after healing`, async () => {
    console.log(
      `cluster sim: seeds ${BASE}..${BASE + SEEDS - 1} (KEYLOCK_CLUSTER_SEEDS / KEYLOCK_CLUSTER_BASE to change, KEYLOCK_SEED=S to replay one)`,
    );
    const started = performance.now();
    const { failures, totals } = await runMany(BASE, SEEDS);
    console.log(`cluster sim: ${SEEDS} seeds, ${failures.length} violations in ${Math.round(performance.now() - started)} ms; ${JSON.stringify(totals)}`);
    assert.equal(failures.length, 0, `violations:\n${failures.join("\n")}`);
    // Not vacuous: failovers, fences of old leaders, and grants by a leader cut off from the members.
    assert.ok(totals.memberFences! > 0, "no previous leader was ever fenced");
    assert.ok(totals.isolations! > 0 && totals.isolatedLeaderGrants! > 0, "the isolated old leader never granted");
    assert.ok(totals.termsThatGranted! > SEEDS, "no failover ever granted in a second term");
  });

  test("cluster sim - 1, 2 and 5 members, and the isolated-leader fault forced", async () => {
    for (const [members, isolateLeader] of [[1, false], [2, false], [2, true], [5, false], [5, true], [3, true]] as const) {
      const { failures, totals } = await runMany(1000, 25, { members, isolateLeader });
      console.log(`cluster sim: ${members} member(s)${isolateLeader ? ", isolated leader" : ""}: ${failures.length} violations; ${JSON.stringify(totals)}`);
      assert.equal(failures.length, 0, `violations:\n${failures.join("\n")}`);
    }
  });

  test("cluster sim - a seed replays exactly (same trace, same hash)", async () => {
    for (const seed of [BASE, BASE + 7]) {
      const first = await runClusterSeed(seed, { keepTrace: true });
      const second = await runClusterSeed(seed, { keepTrace: true });
      assert.ok((first.trace?.length ?? 0) > 20, `seed ${seed} did almost nothing`);
      assert.equal(second.traceHash, first.traceHash);
      assert.deepEqual(second.trace, first.trace);
    }
  });

  test("cluster sim - mutation: a fence agent that reports success without killing (skip-fence) is caught", async () => {
    const options: ClusterOptions = { mutation: "skip-fence", isolateLeader: true, members: 3 };
    const caught: number[] = [];
    let first: string | undefined;
    for (let seed = 1; seed <= 40; seed++) {
      const result = await runClusterSeed(seed, options);
      if (result.violation !== undefined && ["one-serving", "exclusion", "fencing"].includes(result.violation.checker)) {
        caught.push(result.seed);
        first ??= formatClusterViolation(result, options).split("\n").slice(0, 2).join("\n");
      }
      // The same seed without the mutation keeps every invariant.
      const clean = await runClusterSeed(seed, { ...options, mutation: "none" });
      assert.equal(clean.violation, undefined, formatClusterViolation(clean));
    }
    console.log(`cluster sim: skip-fence caught in seeds ${caught.join(", ")}\n${first ?? ""}`);
    assert.ok(caught.length > 0, "no checker caught a leader serving without fencing its predecessor");
  });

  test("cluster sim - mutation: a store whose ELECT is not conditional (unconditional-elect) is caught", async () => {
    const options: ClusterOptions = { mutation: "unconditional-elect", members: 3 };
    const checkers = ["one-serving", "serve-terms-increase", "one-leader-per-term", "exclusion", "fencing"];
    for (let seed = 1; seed <= 80; seed++) {
      const result = await runClusterSeed(seed, options);
      if (result.violation !== undefined && checkers.includes(result.violation.checker)) {
        console.log(`cluster sim: unconditional-elect caught at seed ${seed}: ${result.violation.checker}: ${result.violation.detail}`);
        return;
      }
    }
    assert.fail("no checker caught a store whose ELECT is not conditional in 80 seeds");
  });
}
