// The hostile-peer fuzzer's short run (issue 8), part of npm test: a bounded number of cases against a
// real `keylock up` and a three-member cluster (see test/fuzz/harness.ts). No member may exit, the
// honest clients' guarded counter must stay exact with fencing tokens that never go back, and every
// honest client must make progress once the hostile traffic stops. The seed is printed; replay one
// case with `npm run fuzz -- --seed S --case K`, the whole short run with KEYLOCK_SEED=S.
// KEYLOCK_FUZZ_CASES sets the number of cases (default 15: 12 TCP cases, 3 forged-datagram cases).
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomInt } from "node:crypto";
import { envInteger } from "../support/prng.js";
import { runFuzz } from "./harness.js";

const SEED = envInteger("KEYLOCK_SEED", randomInt(0, 0xffffffff));
const CASES = envInteger("KEYLOCK_FUZZ_CASES", 15);

test(`hostile peers: ${CASES} fuzz cases crash no member and leave honest clients safe and live (seed ${SEED})`, { timeout: 600_000 }, async () => {
  console.log(`fuzz: seed ${SEED} (replay: KEYLOCK_SEED=${SEED}, or one case: npm run fuzz -- --seed ${SEED} --case K)`);
  const lines: string[] = [];
  const result = await runFuzz({
    seed: SEED,
    cases: CASES,
    print: (line) => {
      lines.push(line);
      if (process.env.KEYLOCK_TEST_VERBOSE) console.log(line);
    },
  });
  console.log(`fuzz: ${result.cases} cases, ${result.failures.length} failures, ${result.increments} honest increments`);
  assert.equal(result.cases, CASES);
  assert.ok(result.increments > 0, "the honest clients made progress");
  assert.deepEqual(
    result.failures.map((f) => `${f.replay}: ${f.description}\n${f.reasons.join("\n")}`),
    [],
    `hostile input broke keylock (seed ${SEED}):\n${lines.join("\n")}`,
  );
});
