// The flood logger (src/io/log.ts throttledLogger): one line per interval, the rest counted in the next line.
import { test } from "node:test";
import assert from "node:assert/strict";
import { prettyLine, processLogger, throttledLogger } from "../../src/io/log.js";

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

test("log - processLogger writes JSON lines with level, ISO time, fixed and context fields; a call's fields win", () => {
  const lines: string[] = [];
  let term = 4n;
  const log = processLogger({ format: "json", base: { slot: 2 }, context: () => ({ term }), write: (line) => lines.push(line), level: "info" });
  log("plain line");
  term = 5n;
  log("refused greeting", { level: "warn", rid: "00000000000000ab", key: "orders/1" });
  log("not shown", { level: "debug" });
  log("server line", { term: 9n });
  const records = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
  assert.equal(records.length, 3);
  assert.equal(records[0]!.level, "info");
  assert.match(String(records[0]!.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.deepEqual([records[0]!.slot, records[0]!.term, records[0]!.msg], [2, 4, "plain line"]);
  assert.deepEqual([records[1]!.level, records[1]!.term, records[1]!.rid, records[1]!.key], ["warn", 5, "00000000000000ab", "orders/1"]);
  assert.equal(records[2]!.term, 9, "the server's own term wins over the member's");
});

test("log - on a terminal a record is one readable line", () => {
  const lines: string[] = [];
  const log = processLogger({ format: "pretty", base: { slot: 0 }, context: () => ({ term: 3n }), write: (line) => lines.push(line) });
  log("fencing client", { level: "warn", rid: "00000000000000ab" });
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, /^\d\d:\d\d:\d\d\.\d{3} WARN {2}\[slot 0 term 3\] fencing client rid=00000000000000ab\n$/);
  assert.equal(prettyLine("not json"), "not json\n");
});
