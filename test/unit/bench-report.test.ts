// The bench's reporting (bench/run.ts, bench/chart.ts): fairness and latency summaries of worker results,
// the --compare output and the SVG chart. Speed itself is never asserted (it is measured by `npm run bench`).
import { test } from "node:test";
import assert from "node:assert/strict";
import { compare, fmtRatio, summarise, type BenchRecord } from "../../bench/run.js";
import { multiClientSvg } from "../../bench/chart.js";

test("summarise: rate over the duration, fairness = fewest acquisitions / equal share, max latency over workers", () => {
  const load = summarise(
    [
      { counts: [100, 50], samples: [10, 20, 30], maxUs: 900 },
      { counts: [150, 100], samples: [40], maxUs: 1200 },
    ],
    2000,
  );
  assert.equal(load.rate, 200);
  assert.equal(load.fairness, 50 / 100);
  assert.equal(load.maxUs, 1200);
  assert.equal(load.p50Us, 20);
  assert.equal(load.p99Us, 40);
});

const record = (value: number): BenchRecord => ({
  date: "2026-12-02T00:00:00.000Z",
  machine: { cores: 2, cpu: "test", node: "v20" },
  quick: true,
  rows: [
    {
      id: "hot",
      workload: "8 clients, one key",
      cells: [
        { system: "keylock", value: "", rate: 9000, p99Us: 900, fairness: 0.98 },
        { system: "redlock (1 ms retry)", value: "", rate: 3000, p99Us: 30_000, fairness: 0.5 },
        { system: "pg advisory", value: "", notMeasured: "postgres: refused <&>" },
      ],
      ratios: [{ name: "rate / redlock", value, target: "≥ 2", met: value >= 2 }],
    },
  ],
});

test("compare prints each ratio next to the saved one", (t) => {
  const lines: string[] = [];
  t.mock.method(console, "log", (line: string) => lines.push(line));
  compare(record(3), record(2), "saved.json");
  assert.match(lines.join("\n"), /hot: rate \/ redlock\s+3\.000×\s+was 2\.000×\s+now\/then 1\.50/);
});

test("the chart has one bar per measured system, says 'not measured' otherwise, and escapes text", () => {
  const svg = multiClientSvg(record(3))!;
  assert.equal((svg.match(/<rect /g) ?? []).length, 1 + 2);
  assert.match(svg, /not measured/);
  assert.doesNotMatch(svg, /<&>/);
  assert.equal(multiClientSvg({ ...record(3), rows: [] }), null);
});

test("fmtRatio: two decimals, three below 0.1 or where two would round a missed target onto its bound", () => {
  assert.equal(fmtRatio({ value: 1.1734, met: true, target: "≤ 1.3" }), "1.17");
  assert.equal(fmtRatio({ value: 0.0951, met: true, target: "≤ 1" }), "0.095");
  assert.equal(fmtRatio({ value: 1.997, met: false, target: "≥ 2" }), "1.997");
  assert.equal(fmtRatio({ value: 2.004, met: true, target: "≥ 2" }), "2.00");
  assert.equal(fmtRatio({ value: 2.504, met: false, target: "≤ 2.5" }), "2.504");
  assert.equal(fmtRatio({ value: 3513.01, met: true, target: "- (reported, no target)" }), "3513.01");
});
