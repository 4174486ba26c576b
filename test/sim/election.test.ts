// The election simulator over many seeds (sim/election.ts): the real member driver (runtime/member.ts,
// its election machine and lock servers) in the simulated world under partitions, loss, crashes, stalls,
// store faults and skewed clocks keeps at most one leader per term and one serving server at a time, and
// converges after healing. KEYLOCK_ELECTION_SEEDS / KEYLOCK_ELECTION_BASE change the range;
// KEYLOCK_SEED=S replays one seed and prints its whole trace.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  ELECTION_MUTATIONS,
  formatElectionViolation,
  runElectionSeed,
  type ElectionMutation,
} from "../../sim/election.js";
import { envInteger } from "../support/prng.js";


const SEEDS = envInteger("KEYLOCK_ELECTION_SEEDS", 500);
const BASE = envInteger("KEYLOCK_ELECTION_BASE", 1);
const REPLAY = process.env.KEYLOCK_SEED;

if (REPLAY !== undefined && REPLAY !== "") {
  test(`election sim - replay seed ${REPLAY}`, async () => {
    const seed = envInteger("KEYLOCK_SEED", 0);
    const result = await runElectionSeed(seed, { keepTrace: true });
    for (const line of result.trace ?? []) console.log(line);
    console.log(`election sim: seed ${seed}, ${result.events} events, ${result.virtualMs} virtual ms, hash ${result.traceHash}`);
    if (result.violation !== undefined) assert.fail(formatElectionViolation(result.violation));
  });
} else {
  test(`election sim - seeds ${BASE}..${BASE + SEEDS - 1} keep every invariant and converge after healing`, async () => {
    console.log(`election sim: seeds ${BASE}..${BASE + SEEDS - 1} (KEYLOCK_ELECTION_SEEDS / KEYLOCK_ELECTION_BASE to change, KEYLOCK_SEED=S to replay one)`);
    const failures: string[] = [];
    const converged: number[] = [];
    let events = 0;
    const started = performance.now();
    for (let seed = BASE; seed < BASE + SEEDS; seed++) {
      const result = await runElectionSeed(seed);
      events += result.events;
      if (result.convergedAfterMs !== undefined) converged.push(result.convergedAfterMs);
      if (result.violation !== undefined) {
        const line = formatElectionViolation(result.violation);
        console.log(line);
        failures.push(line);
      }
    }
    converged.sort((a, b) => a - b);
    console.log(
      `election sim: ${SEEDS} seeds, ${failures.length} violations, ${events} events in ${Math.round(performance.now() - started)} ms; ` +
        `converged after healing: p50 ${converged[converged.length >> 1]} ms, max ${converged[converged.length - 1]} ms (virtual)`,
    );
    assert.equal(failures.length, 0, `violations:\n${failures.join("\n")}`);
  });

  test("election sim - a seed replays exactly (same trace, same hash)", async () => {
    for (const seed of [BASE, BASE + 1, BASE + 17]) {
      const first = await runElectionSeed(seed, { keepTrace: true });
      const second = await runElectionSeed(seed, { keepTrace: true });
      console.log(`election sim: seed ${seed} -> ${first.trace?.length} trace lines, hash ${first.traceHash}`);
      assert.ok((first.trace?.length ?? 0) > 5, `seed ${seed} did almost nothing`);
      assert.equal(second.traceHash, first.traceHash);
      assert.deepEqual(second.trace, first.trace);
    }
  });

  test("election sim - the faults reach the interesting paths", async () => {
    const total: Record<string, number> = {};
    for (let seed = BASE; seed < BASE + 100; seed++) {
      for (const [name, n] of Object.entries((await runElectionSeed(seed)).coverage)) total[name] = (total[name] ?? 0) + n;
    }
    console.log(`election sim: coverage over 100 seeds: ${JSON.stringify(total)}`);
    for (const [name, n] of Object.entries(total)) assert.ok(n > 0, `no ${name} in 100 seeds`);
  });

  test("election sim - every cluster size from 1 to 15 slots converges", async () => {
    for (let slots = 1; slots <= 15; slots++) {
      for (let seed = BASE; seed < BASE + 5; seed++) {
        const result = await runElectionSeed(seed, { slots });
        if (result.violation !== undefined) assert.fail(formatElectionViolation(result.violation, { slots }));
      }
    }
  });

  // The checkers can fail: a driver that breaks a rule is caught within a few seeds.
  const MUTANTS: { mutation: Exclude<ElectionMutation, "none">; slots?: number; checkers: string[] }[] = [
    // The fence agent reports success without killing the previous leader.
    { mutation: "skip-fence", checkers: ["one-serving"] },
    // A MemoryStore whose ELECT is a plain write: a slow ELECT of a stale term lands and its member serves.
    { mutation: "unconditional-elect", slots: 3, checkers: ["one-serving", "serve-terms-increase", "one-leader-per-term"] },
    // runtime/member.ts does not wait for its predecessors' fencing before it starts its server.
    { mutation: "unawaited-fence", slots: 3, checkers: ["one-serving"] },
  ];
  for (const { mutation, slots, checkers } of MUTANTS) {
    const checker = checkers.join(" or ");
    test(`election sim - mutation ${mutation}${slots ? ` (${slots} slots)` : ""} is caught by ${checker}`, async () => {
      assert.ok(ELECTION_MUTATIONS.includes(mutation));
      for (let seed = BASE; seed < BASE + 100; seed++) {
        const result = await runElectionSeed(seed, { mutation, ...(slots === undefined ? {} : { slots }) });
        if (result.violation !== undefined && checkers.includes(result.violation.checker)) {
          console.log(`election sim: ${mutation} caught at seed ${seed}: ${result.violation.detail}`);
          return;
        }
      }
      assert.fail(`${mutation} was not caught by ${checker} in 100 seeds`);
    });
  }
}
