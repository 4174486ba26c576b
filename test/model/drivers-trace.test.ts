// Trace validation of the production drivers (docs/model.md): the lock simulator (sim/drivers.ts) runs
// the real LockServerRuntime and LockClients, and its protocol trace is observed in their real cores
// (sim/drivers-trace.ts); model/trace-check.ts must allow every step of every seed (the simulator's `model`
// checker does the same at the end of every run; here the trace is taken apart to show what it covers).
// Deliberately wrong parts (sim/driver-mutations.ts) must be reported at a step the model does not allow.
// KEYLOCK_TRACE_SEEDS overrides the number of seeds, KEYLOCK_TRACE_BASE the first one.
import { test } from "node:test";
import assert from "node:assert/strict";
import { runDriverSeed, runDriverSeedTraced, type DriverMutation } from "../../sim/drivers.js";
import { checkTrace, formatVerdict } from "../../model/trace-check.js";
import { envInteger } from "../support/prng.js";

const SEEDS = envInteger("KEYLOCK_TRACE_SEEDS", 150);
const BASE = envInteger("KEYLOCK_TRACE_BASE", 1);

test(`driver trace validation - seeds ${BASE}..${BASE + SEEDS - 1} of the production drivers follow the model's rules`, async () => {
  let events = 0;
  const kinds = new Map<string, number>();
  const failures: string[] = [];
  for (let seed = BASE; seed < BASE + SEEDS; seed++) {
    const { trace } = await runDriverSeedTraced(seed, { checkModel: false });
    const verdict = checkTrace(trace);
    if (!verdict.ok) failures.push(`seed ${seed} (replay: npm run sim -- --seed ${seed} --trace t.jsonl): ${formatVerdict(verdict)}`);
    events += trace.length;
    for (const event of trace) {
      const kind = event.e === "down" || event.e === "up" || event.e === "delivered" ? `${event.e} ${event.kind}` : event.e;
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
    }
  }
  for (const line of failures) console.log(line);
  console.log(`driver traces: seeds ${BASE}..${BASE + SEEDS - 1}, ${events} protocol events, ${failures.length} with a step the model does not allow`);
  console.log(`driver traces: events by kind ${JSON.stringify(Object.fromEntries([...kinds].sort()))}`);
  assert.equal(failures.length, 0, failures.join("\n"));
  // The observation reaches every part of the protocol: failover, recovery, departures, refusals, fencing.
  for (const kind of ["server-start", "server-stop", "recovery-began", "recovery-finished", "recover", "gone", "up request", "up inv-response",
    "down grant", "down invalidate", "down refuse", "req-sent", "delivered grant", "delivered refuse", "inv-answered", "handle", "release", "client-out"]) {
    assert.ok((kinds.get(kind) ?? 0) > 0, `no ${kind} event in seeds ${BASE}..${BASE + SEEDS - 1}`);
  }
});

// Wrong parts (sim/driver-mutations.ts) whose protocol steps the model refuses: a client that answers an
// invalidation before its users released, a server driver that hands its table a write->read answer as
// null, tables that grant while invalidating, answer a client's own null-request invalidation themselves,
// or do not keep arrival order, a recovery that resumes the table early, and a server whose write tokens
// start over.
const CAUGHT: readonly DriverMutation[] = [
  "early-invalidation-response",
  "read-answer-as-null",
  "grant-while-invalidating",
  "null-compatible-within-client",
  "reorder-requests",
  "resume-before-recovery",
  "reissue-write-seqs",
];

for (const mutation of CAUGHT) {
  test(`driver trace validation - mutation ${mutation} is reported by the trace checker`, async () => {
    for (let seed = 1; seed <= 30; seed++) {
      const verdict = checkTrace((await runDriverSeedTraced(seed, { mutation, checkModel: false })).trace);
      if (!verdict.ok) {
        console.log(`${mutation}: seed ${seed} (npm run sim -- --seed ${seed} --mutation ${mutation} --trace t.jsonl): ${formatVerdict(verdict)}`);
        return;
      }
    }
    assert.fail(`mutation ${mutation}: every trace of seeds 1..30 was allowed by the model`);
  });
}

test("driver trace validation - observing the trace changes nothing in the run", async () => {
  for (const seed of [3, 12, 31]) {
    const traced = await runDriverSeedTraced(seed);
    assert.ok(traced.trace.length > 0, `seed ${seed}: no protocol event`);
    assert.equal(traced.result.traceHash, (await runDriverSeed(seed, { checkModel: false })).traceHash, `seed ${seed}`);
  }
});
