// Trace validation (docs/model.md): the simulator's protocol trace (sim/trace.ts) of every seed is
// replayed against the model's transition rules (model/trace-check.ts), which must allow every step;
// and a deliberately wrong driver (a simulator mutation) is caught at a step the model does not allow.
import { test } from "node:test";
import assert from "node:assert/strict";
import { runSeed } from "../../sim/run.js";
import type { TraceEvent } from "../../sim/trace.js";
import type { Mutation } from "../../sim/world.js";
import { checkTrace, formatVerdict } from "../../model/trace-check.js";

const SEEDS = 100;

function traceOf(seed: number, mutation?: Mutation): TraceEvent[] {
  const events: TraceEvent[] = [];
  runSeed(seed, { traceSink: (event) => events.push(event), ...(mutation !== undefined ? { mutation } : {}) });
  return events;
}

test(`trace validation - ${SEEDS} simulator seeds follow the model's rules`, () => {
  let events = 0;
  for (let seed = 1; seed <= SEEDS; seed++) {
    const trace = traceOf(seed);
    const verdict = checkTrace(trace);
    assert.ok(verdict.ok, `seed ${seed} (replay: npm run sim -- --seed ${seed} --trace t.jsonl): ${formatVerdict(verdict)}`);
    events += trace.length;
  }
  console.log(`${SEEDS} seeds, ${events} protocol events, all allowed by the model`);
});

// Each is a wrong driver or machine rule; the model must refuse some step of the first seeds' traces.
const CAUGHT: readonly Mutation[] = [
  "grant-while-invalidating",
  "reuse-write-seq",
  "early-invalidation-response",
  "reorder-requests",
  "shared-write-handles",
  "resume-before-recovery",
];

for (const mutation of CAUGHT) {
  test(`trace validation - mutation ${mutation} is caught`, () => {
    for (let seed = 1; seed <= 10; seed++) {
      const verdict = checkTrace(traceOf(seed, mutation));
      if (!verdict.ok) {
        console.log(`${mutation}: seed ${seed}: ${formatVerdict(verdict)}`);
        return;
      }
    }
    assert.fail(`mutation ${mutation}: every trace of seeds 1..10 was allowed by the model`);
  });
}

test("trace validation - writing the trace changes nothing in the run", () => {
  for (const seed of [3, 12, 31]) {
    assert.equal(runSeed(seed, { traceSink: () => {} }).traceHash, runSeed(seed).traceHash, `seed ${seed}`);
  }
});
