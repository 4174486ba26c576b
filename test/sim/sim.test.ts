// The simulator over many seeds (DESIGN §8): the real LockServer and ClientLocks under a random
// workload keep every invariant of sim/checkers.ts. KEYLOCK_SIM_SEEDS overrides the number of seeds,
// KEYLOCK_SIM_BASE the first one; every failing seed is printed with its replay command.
import { test } from "node:test";
import assert from "node:assert/strict";
import { formatViolation, runSeed } from "../../sim/run.js";
import { Prng } from "../../sim/prng.js";

function envInteger(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`${name} must be a whole number, got ${raw}`);
  return n;
}

const SEEDS = envInteger("KEYLOCK_SIM_SEEDS", 300);
const BASE = envInteger("KEYLOCK_SIM_BASE", 1);

test(`sim - seeds ${BASE}..${BASE + SEEDS - 1} keep every invariant`, () => {
  console.log(`sim: seeds ${BASE}..${BASE + SEEDS - 1} (KEYLOCK_SIM_SEEDS / KEYLOCK_SIM_BASE to change)`);
  const failures: string[] = [];
  let events = 0;
  for (let seed = BASE; seed < BASE + SEEDS; seed++) {
    const result = runSeed(seed);
    events += result.events;
    if (result.violation !== undefined) {
      const line = formatViolation(result.violation);
      console.log(line);
      failures.push(line);
    }
  }
  console.log(`sim: ${SEEDS} seeds, ${failures.length} violations, ${events} events`);
  assert.equal(failures.length, 0, `violations:\n${failures.join("\n")}`);
});

test("sim - a seed replays exactly (same event log, same hash)", () => {
  for (const seed of [BASE, BASE + 1, BASE + 17]) {
    const first = runSeed(seed, { keepTrace: true });
    const second = runSeed(seed, { keepTrace: true });
    console.log(`sim: seed ${seed} -> ${first.traceLines} trace lines, hash ${first.traceHash}`);
    assert.ok(first.traceLines > 50, `seed ${seed} did almost nothing (${first.traceLines} trace lines)`);
    assert.equal(second.traceHash, first.traceHash, `seed ${seed}: trace hash differs between two runs`);
    assert.deepEqual(second.trace, first.trace, `seed ${seed}: trace differs between two runs`);
    assert.deepEqual(second.coverage, first.coverage);
  }
});

test("sim - different seeds give different runs", () => {
  const hashes = new Set<string>();
  for (let seed = BASE; seed < BASE + 20; seed++) hashes.add(runSeed(seed).traceHash);
  assert.equal(hashes.size, 20, "20 seeds should give 20 different traces");
});

test("sim - the workload reaches the interesting paths", () => {
  // A quiet run is only evidence if the paths were taken: invalidations (to null and to read), upgrades,
  // shrink (null) requests, nonblock refusals, aborts, cache hits, fenced writes.
  const total: Record<string, number> = {};
  for (let seed = BASE; seed < BASE + 50; seed++) {
    const coverage: Record<string, number> = { ...runSeed(seed).coverage };
    for (const [name, n] of Object.entries(coverage)) total[name] = (total[name] ?? 0) + n;
  }
  console.log(`sim: coverage over 50 seeds: ${JSON.stringify(total)}`);
  for (const [name, n] of Object.entries(total)) assert.ok(n > 0, `no ${name} in 50 seeds`);
});

test("sim - prng streams are fixed by the seed", () => {
  const a = new Prng(42);
  const b = new Prng(42);
  const drawn = Array.from({ length: 8 }, () => a.u32());
  assert.deepEqual(
    Array.from({ length: 8 }, () => b.u32()),
    drawn,
  );
  assert.notDeepEqual(
    Array.from({ length: 8 }, () => new Prng(43).u32()),
    drawn,
  );
  const f1 = new Prng(7).fork("x");
  const f2 = new Prng(7).fork("x");
  assert.equal(f1.u32(), f2.u32());
  for (let i = 0; i < 1000; i++) {
    const n = a.int(3, 9);
    assert.ok(n >= 3 && n <= 9 && Number.isInteger(n));
  }
});
