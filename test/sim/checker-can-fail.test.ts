// The checkers can fail (STYLE: a checker that never fires proves nothing). Each mutation of
// sim/driver-mutations.ts is a wrapper around one real part of the production drivers (the lock table,
// the write-seq source, the recovery tracker, a session, the store, a client's machine or connection);
// the checker of sim/drivers.ts that guards that rule must report it on one of the listed seeds, and the
// report must carry the seed and a replay command that reproduces it exactly.
// The seeds are ones found to catch it (most mutations are caught on most seeds; a few need a rare
// interleaving). When the drivers change, find new ones with
// `npm run sim -- --seeds 300 --mutation M [--failover-heavy]`.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  FAILOVER_HEAVY,
  formatDriverViolation,
  replayCommand,
  runDriverSeed,
  type DriverChecker,
  type DriverMutation,
  type DriverRunOptions,
} from "../../sim/drivers.js";

interface Expected {
  readonly checker: DriverChecker;
  readonly seeds: readonly number[];
  /** Run with the failover-heavy profile. */
  readonly heavy?: true;
}

/** The checker each mutation must trip (others may fire first on other seeds). */
const EXPECTED: Record<Exclude<DriverMutation, "none">, Expected> = {
  "reuse-write-seq": { checker: "fencing", seeds: [1, 4, 6] },
  "reissue-write-seqs": { checker: "fencing", seeds: [28, 30, 41] },
  "grant-while-invalidating": { checker: "exclusion", seeds: [3, 4, 5] },
  "null-compatible-within-client": { checker: "model", seeds: [5, 10, 18] },
  "reorder-requests": { checker: "model", seeds: [1, 5, 6] },
  "resume-before-recovery": { checker: "exclusion", seeds: [42, 52, 62], heavy: true },
  "skip-lock-recovery": { checker: "exclusion", seeds: [32, 74, 86] },
  "farewell-skips-recovery": { checker: "honesty", seeds: [9, 38, 94], heavy: true },
  "reuse-term": { checker: "fencing", seeds: [4, 5, 6] },
  "no-reconnect-resend": { checker: "convergence", seeds: [158, 240, 256] },
  "read-answer-as-null": { checker: "coherence", seeds: [1, 8, 11] },
  "early-invalidation-response": { checker: "exclusion", seeds: [3, 4, 5] },
  "shared-write-handles": { checker: "exclusion", seeds: [3, 4, 8] },
  "swallow-grant": { checker: "convergence", seeds: [3, 10, 14] },
  "recover-lowered-mode": { checker: "exclusion", seeds: [87, 104], heavy: true },
  "no-resend": { checker: "convergence", seeds: [4, 10, 11] },
  "drop-early-messages": { checker: "liveness", seeds: [8, 10, 22] },
};

for (const [mutation, expected] of Object.entries(EXPECTED) as [Exclude<DriverMutation, "none">, Expected][]) {
  test(`checkers - mutation ${mutation} is caught by ${expected.checker}`, async () => {
    const options: DriverRunOptions = { mutation, ...(expected.heavy ? { adjust: FAILOVER_HEAVY } : {}) };
    const seen: string[] = [];
    for (const seed of expected.seeds) {
      const v = (await runDriverSeed(seed, options)).violation;
      if (v === undefined) continue;
      const line = formatDriverViolation(v, mutation, expected.heavy === true);
      seen.push(`${seed}: ${v.checker}`);
      assert.equal(v.seed, seed);
      assert.ok(line.startsWith(`seed ${seed}: `) && line.includes(replayCommand(seed, mutation, expected.heavy === true)) && line.includes(`--mutation ${mutation}`), line);
      assert.ok(v.trace.length > 0 && v.trace.length <= 30, `the report has ${v.trace.length} trace lines`);
      if (v.checker !== expected.checker) continue;
      console.log(`mutation ${mutation}${expected.heavy ? " (failover-heavy)" : ""}: ${line}`);
      // The replay reproduces it exactly.
      assert.deepEqual((await runDriverSeed(seed, options)).violation, v);
      return;
    }
    assert.fail(`mutation ${mutation} not caught by ${expected.checker} on seeds ${expected.seeds.join(", ")} (seen: ${seen.join("; ") || "nothing"})`);
  });
}

test("checkers - without a mutation the same seeds are clean", async () => {
  const seeds = new Set(Object.values(EXPECTED).flatMap((e) => e.seeds));
  for (const seed of [...seeds].sort((a, b) => a - b)) {
    for (const options of [{}, { adjust: FAILOVER_HEAVY }]) {
      const v = (await runDriverSeed(seed, options)).violation;
      assert.equal(v, undefined, v === undefined ? "" : formatDriverViolation(v));
    }
  }
});
