// Trace validation of the production drivers (docs/model.md): the lock simulator (sim/drivers.ts) runs
// the real LockServerRuntime and LockClients, and its protocol trace is observed in their real cores
// (sim/drivers-trace.ts); model/trace-check.ts must allow every step of every seed (the simulator's `model`
// checker does the same at the end of every run; here the trace is taken apart to show what it covers).
// Deliberately wrong parts (sim/driver-mutations.ts) must be reported at a step the model does not allow.
// KEYLOCK_TRACE_SEEDS overrides the number of seeds, KEYLOCK_TRACE_BASE the first one.
import { test } from "node:test";
import assert from "node:assert/strict";
import { FAILOVER_HEAVY, runDriverSeed, runDriverSeedTraced, type DriverMutation } from "../../sim/drivers.js";
import type { TraceEvent } from "../../sim/trace.js";
import type { Key } from "../../src/core/keys.js";
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
    "down grant", "down invalidate", "down refuse", "req-sent", "delivered grant", "delivered refuse", "inv-started", "inv-answered", "handle", "release", "client-out"]) {
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

// An invalidation whose callback was running when its server died finishes after the new server granted
// the key again (from the mode the client reported, B7): the client lowered its mode when the callback
// started, as keylock.pml's make_progress does, so the grant stands at the answer and a handle under it is
// allowed. The checker once lowered at the answer instead and called this a violation (found by
// `npm run sim -- --seeds 3000 --base 3517440 --failover-heavy`: seeds 3517633, 3518119, 3519464).
test("driver trace validation - a grant applied while an invalidation's callback runs stands at its answer", async () => {
  const seed = 3519464;
  const { trace } = await runDriverSeedTraced(seed, { adjust: FAILOVER_HEAVY, checkModel: false });
  const verdict = checkTrace(trace);
  assert.ok(verdict.ok, `seed ${seed} (failover-heavy): ${formatVerdict(verdict)}`);
  const started = new Set<string>();
  let grantsWhileStarted = 0;
  for (const event of trace) {
    if (event.e === "inv-started") started.add(`${event.c}|${event.key}`);
    else if (event.e === "inv-answered") started.delete(`${event.c}|${event.key}`);
    else if (event.e === "delivered" && event.kind === "grant" && started.has(`${event.c}|${event.key}`)) grantsWhileStarted++;
  }
  assert.ok(grantsWhileStarted > 0, `seed ${seed} no longer delivers a grant while an invalidation's callback runs`);
});

test("driver trace validation - the client-side rules, as transcripts", () => {
  const k = "k" as Key;
  const granted: TraceEvent[] = [
    { e: "req-sent", c: 0, key: k, mode: "read", noQueue: false },
    { e: "delivered", c: 0, kind: "grant", key: k, mode: "read", seq: "0" },
  ];
  // Across failover: the callback (read -> null) starts, the new server grants read again, the callback ends.
  const regranted: TraceEvent[] = [
    ...granted,
    { e: "inv-started", c: 0, key: k, from: "read", to: "null" },
    { e: "req-sent", c: 0, key: k, mode: "read", noQueue: false },
    { e: "delivered", c: 0, kind: "grant", key: k, mode: "read", seq: "0" },
    { e: "inv-answered", c: 0, key: k, old: "read", mode: "null" },
    { e: "handle", c: 0, id: 1, key: k, mode: "read" },
  ];
  assert.equal(formatVerdict(checkTrace(regranted)), `ok, ${regranted.length} events`);
  // Without that grant the answered invalidation leaves null, and a handle then is refused...
  const lowered: TraceEvent[] = [
    ...granted,
    { e: "inv-started", c: 0, key: k, from: "read", to: "null" },
    { e: "inv-answered", c: 0, key: k, old: "read", mode: "null" },
    { e: "handle", c: 0, id: 1, key: k, mode: "read" },
  ];
  assert.match(formatVerdict(checkTrace(lowered)), /step 5 of 5 .*c0 gets a read handle on k under cached mode null/);
  // ... as it is while the callback runs (the mode went down when it started) ...
  const during: TraceEvent[] = [...granted, { e: "inv-started", c: 0, key: k, from: "read", to: "null" }, { e: "handle", c: 0, id: 1, key: k, mode: "read" }];
  assert.match(formatVerdict(checkTrace(during)), /step 4 of 4 .*under cached mode null/);
  // ... and after an invalidation answered without a callback (the client was leaving).
  const leaving: TraceEvent[] = [...granted, { e: "inv-answered", c: 0, key: k, old: "read", mode: "null" }, { e: "handle", c: 0, id: 1, key: k, mode: "read" }];
  assert.match(formatVerdict(checkTrace(leaving)), /step 4 of 4 .*under cached mode null/);
  // One callback at a time per key.
  const twice: TraceEvent[] = [
    ...granted,
    { e: "inv-started", c: 0, key: k, from: "read", to: "null" },
    { e: "inv-started", c: 0, key: k, from: "null", to: "null" },
  ];
  assert.match(formatVerdict(checkTrace(twice)), /step 4 of 4 .*starts a second invalidation of k before answering the first/);
});
