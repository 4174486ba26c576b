// The invalidation deadline's timers (runtime/server-limits.ts) on a manual clock: one timer per client,
// re-armed for the next oldest when the oldest is answered, `stuck` reported once when one is overdue,
// nothing for a session no longer current, and no timer at all with a limit of 0.
import { test } from "node:test";
import assert from "node:assert/strict";
import { InvalidationDeadlines, type LimitedSession } from "../../src/runtime/server-limits.js";
import { serverLimits } from "../../src/core/limits.js";
import { Metrics } from "../../src/runtime/metrics.js";
import type { Clock, Timer } from "../../src/io/world.js";
import { keyFromText, type Key } from "../../src/core/keys.js";

class ManualClock implements Clock {
  nowMs = 0;
  private timers = new Map<Timer, { at: number; run: () => void }>();
  now(): number {
    return this.nowMs;
  }
  monotonicMs(): number {
    return this.nowMs;
  }
  setTimeout(run: () => void, delayMs: number): Timer {
    const timer = {};
    this.timers.set(timer, { at: this.nowMs + delayMs, run });
    return timer;
  }
  clearTimeout(timer: Timer | null | undefined): void {
    if (timer) this.timers.delete(timer);
  }
  /** No input arrives between a timer and its deferred decision here: decide at once. */
  defer(run: () => void): void {
    run();
  }
  get pending(): number {
    return this.timers.size;
  }
  advance(ms: number): void {
    const until = this.nowMs + ms;
    for (;;) {
      const due = [...this.timers.entries()].filter(([, t]) => t.at <= until).sort((a, b) => a[1].at - b[1].at)[0];
      if (due === undefined) break;
      this.timers.delete(due[0]);
      this.nowMs = due[1].at;
      due[1].run();
    }
    this.nowMs = until;
  }
}

const key = (s: string): Key => keyFromText(s);

function setup(invalidationTimeoutMs: number) {
  const clock = new ManualClock();
  const metrics = new Metrics();
  const stuck: bigint[] = [];
  const lines: string[] = [];
  let current = true;
  const deadlines = new InvalidationDeadlines({
    clock,
    limits: serverLimits({ invalidationTimeoutMs }),
    metrics,
    counters: metrics.counts,
    log: (line: string) => void lines.push(line),
    isCurrent: () => current,
    stuck: (rid) => void stuck.push(rid),
  });
  const session: LimitedSession = { rid: 7n, state: { name: "c7" }, connection: null, invalidations: new Map(), invalidationTimer: null };
  return { clock, metrics, stuck, lines, deadlines, session, leave: () => (current = false) };
}

test("server limits - an unanswered invalidation makes its client stuck once, at the deadline of the oldest", () => {
  const { clock, metrics, stuck, lines, deadlines, session } = setup(1000);
  deadlines.sent(session, key("a"));
  clock.advance(400);
  deadlines.sent(session, key("b")); // same timer, still armed for "a"
  assert.equal(clock.pending, 1);
  clock.advance(599);
  assert.deepEqual(stuck, []);
  clock.advance(1);
  assert.deepEqual(stuck, [7n]);
  assert.equal(metrics.counts.invalidationTimeouts, 1);
  assert.match(lines.join("\n"), /has not answered the invalidation of key 0x61 for 1000 ms/);
  assert.equal(session.invalidations.size, 0);
  assert.equal(clock.pending, 0);
  clock.advance(10_000);
  assert.deepEqual(stuck, [7n]);
});

test("server limits - answering the oldest re-arms for the next one; answering all clears the timer", () => {
  const { clock, stuck, deadlines, session } = setup(1000);
  deadlines.sent(session, key("a"));
  clock.advance(400);
  deadlines.sent(session, key("b"));
  clock.advance(300);
  deadlines.answered(session, key("a"));
  clock.advance(300); // "a"'s deadline passes: "b" has waited 600 ms, so the timer waits 400 more
  assert.deepEqual(stuck, []);
  assert.equal(clock.pending, 1);
  clock.advance(399);
  assert.deepEqual(stuck, []);
  deadlines.answered(session, key("b"));
  assert.equal(clock.pending, 0);
  assert.equal(session.invalidationTimer, null);
  clock.advance(10_000);
  assert.deepEqual(stuck, []);
});

test("server limits - no timer with a limit of 0; a session no longer current is not reported; clear cancels", () => {
  const off = setup(0);
  off.deadlines.sent(off.session, key("a"));
  assert.equal(off.clock.pending, 0);
  assert.equal(off.session.invalidations.size, 1);

  const gone = setup(1000);
  gone.deadlines.sent(gone.session, key("a"));
  gone.leave();
  gone.clock.advance(5000);
  assert.deepEqual(gone.stuck, []);

  const cleared = setup(1000);
  cleared.deadlines.sent(cleared.session, key("a"));
  cleared.deadlines.clear(cleared.session);
  assert.equal(cleared.clock.pending, 0);
  assert.equal(cleared.session.invalidations.size, 0);
});
