// The hostile-peer fuzzer's short run (issue 8), part of npm test: a bounded number of cases against a
// real `keylock up` and a three-member cluster (see test/fuzz/harness.ts). No member may exit, the
// honest clients' guarded counter must stay exact with fencing tokens that never go back, and every
// honest client must make progress once the hostile traffic stops. The seed is printed; replay one
// case with `npm run fuzz -- --seed S --case K`, the whole short run with KEYLOCK_SEED=S.
// KEYLOCK_FUZZ_CASES sets the number of cases (default 12: 10 against `keylock up`, 2 forged-datagram
// cases against the cluster). Each case's line is printed; a failure lists its reasons and replay command.
// A recover case whose honest client is fenced fails like any other (known finding F1 is closed, harness.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomInt } from "node:crypto";
import { envInteger } from "../support/prng.js";
import { runFuzz } from "./harness.js";

const SEED = envInteger("KEYLOCK_SEED", randomInt(0, 0xffffffff));
const CASES = envInteger("KEYLOCK_FUZZ_CASES", 12);

test(`hostile peers: ${CASES} fuzz cases crash no member and leave honest clients safe and live (seed ${SEED})`, { timeout: 600_000 }, async () => {
  console.log(`fuzz: seed ${SEED} (replay: KEYLOCK_SEED=${SEED}, or one case: npm run fuzz -- --seed ${SEED} --case K)`);
  const result = await runFuzz({ seed: SEED, cases: CASES, print: (line) => console.log(line) });
  console.log(`fuzz: ${result.cases} cases, ${result.failures.length} failures (${result.increments} honest increments)`);
  const summary = result.failures.map((f) => `${f.replay}    # ${f.reasons[0]!.split("\n")[0]}`);
  assert.deepEqual(summary, [], `hostile input broke keylock (seed ${SEED}); the case lines above have the details`);
  assert.equal(result.cases, CASES);
  assert.ok(result.increments > 0, "the honest clients made progress");
});
