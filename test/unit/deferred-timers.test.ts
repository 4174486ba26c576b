// The server's deadlines expire only after the input already due was read (clock.defer, as the election's
// timers: B41): a member stalled past a deadline (a GC pause, a descheduled process) reads what came in
// meanwhile first, and a deadline that input met or cleared does not fire. A hand-driven clock plays the
// event loop: `fire` is the timers phase, then the input already due, then `runDeferred` the check phase.
import { test } from "node:test";
import assert from "node:assert/strict";
import { MachineOutcomes, type OutcomeHost } from "../../src/runtime/server-outcomes.js";
import { InvalidationDeadlines, type InvalidationDeadlineHost, type LimitedSession } from "../../src/runtime/server-limits.js";
import { keyFromText } from "../../src/core/keys.js";
import type { ServerInput } from "../../src/core/server-machine.js";
import type { Clock, Timer } from "../../src/io/world.js";

class LoopClock implements Clock {
  nowMs = 0;
  readonly timers = new Set<{ run: () => void; atMs: number }>();
  readonly deferred: (() => void)[] = [];
  now(): number {
    return this.nowMs;
  }
  monotonicMs(): number {
    return this.nowMs;
  }
  setTimeout(run: () => void, delayMs: number): Timer {
    const timer = { run, atMs: this.nowMs + delayMs };
    this.timers.add(timer);
    return timer;
  }
  clearTimeout(timer: Timer | null | undefined): void {
    this.timers.delete(timer as { run: () => void; atMs: number });
  }
  defer(run: () => void): void {
    this.deferred.push(run);
  }
  /** The timers phase after a stall until `ms`: every timer due runs (each only defers its decision). */
  fire(ms: number): void {
    this.nowMs = ms;
    for (const timer of [...this.timers]) {
      if (timer.atMs > ms) continue;
      this.timers.delete(timer);
      timer.run();
    }
  }
  /** The check phase: the deferred decisions run. */
  runDeferred(): void {
    for (const run of this.deferred.splice(0)) run();
  }
}

function outcomes(clock: LoopClock, inputs: ServerInput[]): MachineOutcomes {
  const host = { clock, isStopping: () => false, input: (input: ServerInput) => inputs.push(input) } as unknown as OutcomeHost;
  return new MachineOutcomes(host);
}

test("a machine timer cleared by input read after its deadline passed, in the same turn, does not fire", () => {
  const clock = new LoopClock();
  const inputs: ServerInput[] = [];
  const driver = outcomes(clock, inputs);
  driver.setTimer({ type: "set-timer", timer: "reconnect:1", ms: 1000 });
  clock.fire(5000); // the member was stalled for 5 s
  driver.clearTimer({ type: "clear-timer", timer: "reconnect:1" }); // the greeting that came in meanwhile
  clock.runDeferred();
  assert.deepEqual(inputs, []);
});

test("a machine timer set again by that input fires at its new deadline only", () => {
  const clock = new LoopClock();
  const inputs: ServerInput[] = [];
  const driver = outcomes(clock, inputs);
  const set = (ms: number): void => driver.setTimer({ type: "set-timer", timer: "recovery", ms });
  set(1000);
  clock.fire(2000);
  set(1000);
  clock.runDeferred();
  assert.deepEqual(inputs, []);
  clock.fire(3000);
  clock.runDeferred();
  assert.deepEqual(inputs, [{ type: "timeout", timer: "recovery" }]);
});

test("a machine timer nobody cleared fires once the input already due was read", () => {
  const clock = new LoopClock();
  const inputs: ServerInput[] = [];
  const driver = outcomes(clock, inputs);
  driver.setTimer({ type: "set-timer", timer: "reconnect:2", ms: 1000 });
  clock.fire(1000);
  assert.deepEqual(inputs, [], "decided in the check phase, not the timers phase");
  clock.runDeferred();
  assert.deepEqual(inputs, [{ type: "timeout", timer: "reconnect:2" }]);
});

test("an invalidation answered during a stall past its deadline does not mark the client stuck", () => {
  const clock = new LoopClock();
  const stuck: bigint[] = [];
  const host = {
    clock,
    limits: { invalidationTimeoutMs: 1000 },
    metrics: { invalidationRoundTrip: { observe: () => undefined } },
    counters: { invalidationTimeouts: 0 },
    log: () => undefined,
    isCurrent: () => true,
    stuck: (rid: bigint) => stuck.push(rid),
  } as unknown as InvalidationDeadlineHost;
  const deadlines = new InvalidationDeadlines(host);
  const session: LimitedSession = { rid: 7n, state: { name: "c" }, connection: null, invalidations: new Map(), invalidationTimer: null };
  const key = keyFromText("k");
  deadlines.sent(session, key);
  clock.fire(4000);
  deadlines.answered(session, key); // the answer was in the socket when the stall ended
  clock.runDeferred();
  assert.deepEqual(stuck, []);

  // Not answered: stuck, once the input already due was read.
  deadlines.sent(session, key);
  clock.fire(6000);
  clock.runDeferred();
  assert.deepEqual(stuck, [7n]);
});
