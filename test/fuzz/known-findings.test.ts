// The fuzzer's recognition of known finding F1 (test/fuzz/harness.ts): a recover case whose only failure is
// an honest client fenced after the server refused its recovery report for conflicting with the hostile
// client's is counted apart; anything else stays a failure. The lines are the member's own log format.
import { test } from "node:test";
import assert from "node:assert/strict";
import { knownF1Refusal } from "./harness.js";

const HONEST = "d2b26f066245c341";
const HOSTILE = "923c9858e7d72bc5";
const stalled = `no progress within 10000 ms after the hostile traffic stopped: honest client 0 (10388 increments; last errors: fenced: EFENCED: 127.0.0.1:36943: this server forgot the client (it did not reconnect in time and was fenced))`;
const refusal = (refused: string, holder: string): string =>
  `[stderr] ${JSON.stringify({ level: "warn", msg: `protocol error from client ${refused} (fuzz-honest-0): recovery batch from rid ${refused} refused, nothing recovered: key "fuzz-counter" is reported in mode write, which conflicts with write held by rid ${holder}; closing its connection` })}`;

test("fuzz: F1 is recognised only as an honest client fenced after its report was refused for the hostile client's", () => {
  const line = refusal(HONEST, HOSTILE);
  assert.equal(knownF1Refusal([stalled], [line], [HONEST], HOSTILE), line);
  // Another failure alongside, or a stall without a fence, is a failure.
  assert.equal(knownF1Refusal([stalled, "honest safety: counter is 3 but 4 increments completed"], [line], [HONEST], HOSTILE), null);
  assert.equal(knownF1Refusal([stalled.replace(/fenced/g, "timed out")], [line], [HONEST], HOSTILE), null);
  assert.equal(knownF1Refusal([], [line], [HONEST], HOSTILE), null);
  // The refusal must name this case's hostile client as the holder, and an honest client as the refused one.
  assert.equal(knownF1Refusal([stalled], [refusal(HONEST, "0123456789abcdef")], [HONEST], HOSTILE), null);
  assert.equal(knownF1Refusal([stalled], [refusal(HOSTILE, HONEST)], [HONEST], HOSTILE), null);
  assert.equal(knownF1Refusal([stalled], [], [HONEST], HOSTILE), null);
});
