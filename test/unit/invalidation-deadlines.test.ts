// The invalidation deadline's decision (core/invalidation-deadlines.ts) as a table: outstanding
// invalidations (key@sentAtMs, oldest first), now, limit → the verdict.
import { test } from "node:test";
import assert from "node:assert/strict";
import { checkInvalidations, type InvalidationCheck } from "../../src/core/invalidation-deadlines.js";

const TIMEOUT_MS = 1000;

const table: [outstanding: [string, number][], nowMs: number, expected: InvalidationCheck<string>][] = [
  // nothing outstanding: nothing to do
  [[], 5000, { kind: "none" }],
  // sent just now: wait the whole limit
  [[["a", 100]], 100, { kind: "wait", delayMs: 1000 }],
  // part of the limit gone: wait the rest
  [[["a", 100]], 700, { kind: "wait", delayMs: 400 }],
  // one ms short of the limit: still waiting
  [[["a", 100]], 1099, { kind: "wait", delayMs: 1 }],
  // exactly at the limit: overdue
  [[["a", 100]], 1100, { kind: "overdue", key: "a", waitedMs: 1000 }],
  // past the limit: overdue, with the real wait
  [[["a", 100]], 4100, { kind: "overdue", key: "a", waitedMs: 4000 }],
  // only the oldest counts: a newer one is not yet overdue, the oldest is
  [[["a", 100], ["b", 900]], 1200, { kind: "overdue", key: "a", waitedMs: 1100 }],
  // the oldest was answered (deleted): the next one sets the deadline
  [[["b", 900]], 1200, { kind: "wait", delayMs: 700 }],
  // order is the map's, not the times': the first entry is the one checked
  [[["b", 900], ["a", 100]], 1200, { kind: "wait", delayMs: 700 }],
];

test("invalidation deadlines - the oldest outstanding invalidation decides, at and past the limit", () => {
  for (const [outstanding, nowMs, expected] of table) {
    const got = checkInvalidations(new Map(outstanding), nowMs, TIMEOUT_MS);
    assert.deepEqual(got, expected, `${outstanding.map(([k, t]) => `${k}@${t}`).join(" ") || "(none)"} at ${nowMs}`);
  }
});

test("invalidation deadlines - a wait always ends before or at the deadline, never 0 ms", () => {
  for (let sent = 0; sent <= 50; sent++) {
    for (let now = sent; now <= sent + 2 * TIMEOUT_MS; now += 37) {
      const got = checkInvalidations(new Map([["k", sent]]), now, TIMEOUT_MS);
      if (got.kind === "wait") {
        assert.ok(got.delayMs > 0 && now + got.delayMs === sent + TIMEOUT_MS);
      } else {
        assert.equal(got.kind, "overdue");
        assert.ok(now - sent >= TIMEOUT_MS);
      }
    }
  }
});
