// The flood logger (src/io/log.ts throttledLogger): one line per interval, the rest counted in the next line.
import { test } from "node:test";
import assert from "node:assert/strict";
import { throttledLogger } from "../../src/io/log.js";

test("log - a flood of lines is logged once per interval, with how many were left out", () => {
  const lines: string[] = [];
  let now = 0;
  const log = throttledLogger((line) => lines.push(line), 1000, () => now);
  for (let i = 0; i < 500; i++) log(`closing connection ${i}`);
  now = 999;
  log("still within the interval");
  now = 1000;
  log("next second");
  now = 5000;
  log("quiet since");
  assert.deepEqual(lines, [
    "closing connection 0",
    "next second (and 500 similar line(s) left out in the last 1000 ms or more)",
    "quiet since",
  ]);
});
