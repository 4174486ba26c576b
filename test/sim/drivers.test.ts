// The lock simulator over the production drivers (sim/drivers.ts, issue 10): the real LockServerRuntime and
// LockClient in the simulated world (sim/sim-world.ts) keep exclusion, fencing, honesty and convergence over
// many seeds; a seed replays exactly; and each mutation (a wrapper around a real part) is caught.
// KEYLOCK_SIM_SEEDS overrides the number of seeds, KEYLOCK_SIM_BASE the first one; every failing seed is
// printed with its replay command.
import { test } from "node:test";
import assert from "node:assert/strict";
import { formatDriverViolation, runDriverSeed, type DriverMutation } from "../../sim/drivers.js";
import { envInteger } from "../support/prng.js";

const SEEDS = envInteger("KEYLOCK_SIM_SEEDS", 150);
const BASE = envInteger("KEYLOCK_SIM_BASE", 1);

test(`sim drivers - seeds ${BASE}..${BASE + SEEDS - 1} keep every invariant`, async () => {
  const failures: string[] = [];
  let events = 0;
  let grants = 0;
  let serverStarts = 0;
  let fences = 0;
  for (let seed = BASE; seed < BASE + SEEDS; seed++) {
    const result = await runDriverSeed(seed);
    events += result.events;
    grants += result.stats.grants;
    serverStarts += result.stats.serverStarts;
    fences += result.stats.fences;
    if (result.violation !== undefined) failures.push(formatDriverViolation(result.violation));
  }
  for (const line of failures) console.log(line);
  console.log(`sim drivers: ${SEEDS} seeds, ${failures.length} violations, ${events} events, ${grants} grants, ${serverStarts} server starts, ${fences} fences`);
  assert.equal(failures.length, 0, `violations:\n${failures.join("\n")}`);
  assert.ok(serverStarts > SEEDS && fences > 0 && grants > SEEDS, "the faults and the workload reach failover, fencing and grants");
});

test("sim drivers - a seed replays exactly (same trace, same hash)", async () => {
  for (const seed of [BASE, BASE + 7]) {
    const first = await runDriverSeed(seed, { keepTrace: true });
    const second = await runDriverSeed(seed, { keepTrace: true });
    console.log(`sim drivers: seed ${seed} -> ${first.traceLines} trace lines, hash ${first.traceHash}`);
    assert.ok(first.traceLines > 30, `seed ${seed} did almost nothing`);
    assert.deepEqual(second.trace, first.trace, `seed ${seed}: the trace differs between two runs`);
    assert.equal(second.traceHash, first.traceHash);
  }
  const hashes = new Set<string>();
  for (let seed = BASE; seed < BASE + 10; seed++) hashes.add((await runDriverSeed(seed)).traceHash);
  assert.equal(hashes.size, 10, "10 seeds give 10 different runs");
});

/**
 * Each mutation is caught within its seeds. `no-reconnect-resend` needs a lost message at a reconnect to the
 * same server with no failover after it, which few seeds draw: its seeds are ones found to catch it (the first
 * in 1..1500); when the drivers change, find another with
 * `npm run sim -- --drivers --seeds 1500 --mutation no-reconnect-resend`.
 */
const MUTATION_SEEDS: Record<Exclude<DriverMutation, "none">, number[]> = {
  "reuse-write-seq": [1, 2, 3, 4, 5],
  "skip-lock-recovery": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
  "no-reconnect-resend": [341, 398, 544],
  "early-invalidation-response": [1, 2, 3, 4, 5],
  "read-answer-as-null": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
};

for (const [mutation, seeds] of Object.entries(MUTATION_SEEDS) as [Exclude<DriverMutation, "none">, number[]][]) {
  test(`sim drivers - the mutation ${mutation} is caught`, async () => {
    const caught: string[] = [];
    for (const seed of seeds) {
      const result = await runDriverSeed(seed, { mutation });
      if (result.violation !== undefined) caught.push(formatDriverViolation(result.violation, mutation));
    }
    console.log(`sim drivers: ${mutation}: ${caught.length} of ${seeds.length} seeds caught it; first: ${caught[0] ?? "none"}`);
    assert.ok(caught.length > 0, `${mutation} was not caught in seeds ${seeds.join(", ")}`);
  });
}
