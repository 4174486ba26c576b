// The Promela model (model/keylock.pml) checked with spin in the CI size (model/run.ts): the honest
// model has no error, and every mutation variant produces an error trail. Skips with a printed reason
// when spin or gcc is missing, except under CI=true, where it must run (.ci/run installs spin).
import { test } from "node:test";
import assert from "node:assert/strict";
import { MODEL_MUTATIONS, describeResult, honestChecks, mutationCheck, runCheck, toolsMissing } from "../../model/run.js";

const missing = toolsMissing();
const skip = missing !== undefined && process.env.CI !== "true" ? `skipped: ${missing}` : false;
if (skip !== false) console.log(`model test ${skip}`);

test("model - the honest model has no error in the CI bounds", { skip }, () => {
  for (const check of honestChecks("ci")) {
    const r = runCheck(check);
    console.log(`${check.name}: ${r.errors} errors; ${describeResult(r)}`);
    assert.equal(r.finished, true, `${check.name} did not finish:\n${r.output.slice(-2000)}`);
    assert.equal(r.errors, 0, `${check.name}: ${r.firstError ?? ""}\n${r.output.slice(-2000)}`);
  }
});

for (const mutation of Object.keys(MODEL_MUTATIONS)) {
  test(`model - mutation ${mutation} (sim ${MODEL_MUTATIONS[mutation]}) gives an error trail`, { skip }, () => {
    const r = runCheck(mutationCheck(mutation));
    console.log(`${mutation}: ${r.firstError ?? "no error"}; ${describeResult(r)}`);
    assert.ok(r.errors > 0, `mutation ${mutation} was not caught:\n${r.output.slice(-2000)}`);
    assert.match(r.output, /wrote keylock\.pml\.trail/);
  });
}
