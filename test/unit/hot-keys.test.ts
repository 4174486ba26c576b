// The status page's hot-key summary (runtime/hot-keys.ts) and the metrics' fast histogram
// (runtime/metrics.ts). The randomised case prints its seed; KEYLOCK_SEED=N replays it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { HotKeys, type HotKeyMessage } from "../../src/runtime/hot-keys.js";
import { FastHistogram, Metrics } from "../../src/runtime/metrics.js";
import { keyFromText, type Key } from "../../src/core/keys.js";
import { envInteger, prng } from "../support/prng.js";

test("hot keys - exact while fewer keys than the capacity, most messages first", () => {
  const hot = new HotKeys(8);
  const a = keyFromText("a");
  const b = keyFromText("b");
  for (let i = 0; i < 5; i++) hot.count(a, "requests");
  hot.count(a, "grants");
  hot.count(b, "invalidations");
  assert.deepEqual(
    hot.top(10).map((r) => [r.key, r.total, r.error, r.requests, r.invalidations, r.grants, r.responses]),
    [
      [a, 6, 0, 5, 0, 1, 0],
      [b, 1, 0, 0, 1, 0, 0],
    ],
  );
  assert.equal(hot.top(1).length, 1);
});

test("hot keys - bounded, and every heavy hitter is found with a bounded overestimate (randomised)", () => {
  const seed = envInteger("KEYLOCK_SEED", Math.floor(Math.random() * 2 ** 31));
  console.log(`# hot-keys seed ${seed} (replay with KEYLOCK_SEED=${seed})`);
  const random = prng(seed);
  const capacity = 32;
  const hot = new HotKeys(capacity);
  const exact = new Map<Key, number>();
  const heavy = Array.from({ length: 5 }, (_, i) => keyFromText(`heavy/${i}`));
  const kinds: HotKeyMessage[] = ["requests", "invalidations", "grants", "responses"];
  const messages = 100_000;
  for (let i = 0; i < messages; i++) {
    // A quarter of the traffic goes to five keys, the rest is spread over 100k keys.
    const key = random() < 0.25 ? heavy[Math.floor(random() * heavy.length)]! : keyFromText(`cold/${Math.floor(random() * 100_000)}`);
    hot.count(key, kinds[Math.floor(random() * kinds.length)]!);
    exact.set(key, (exact.get(key) ?? 0) + 1);
  }
  assert.ok(hot.tracked <= capacity, `at most ${capacity} keys tracked`);
  const top = hot.top(heavy.length);
  assert.deepEqual(new Set(top.map((r) => r.key)), new Set(heavy), "the five heavy keys lead");
  for (const row of hot.top(capacity)) {
    const truth = exact.get(row.key)!;
    assert.ok(row.total >= truth - 0 && row.total - row.error <= truth, `${row.key}: ${row.total} (error ${row.error}) vs ${truth}`);
    assert.ok(row.error <= messages / capacity, "overestimate bounded by messages / capacity");
    assert.equal(row.requests + row.invalidations + row.grants + row.responses, row.total - row.error);
  }
});

test("hot keys - the row counted last, taken over by another key, is not counted for its old key", () => {
  const hot = new HotKeys(1);
  const a = keyFromText("a");
  const b = keyFromText("b");
  hot.count(a, "requests");
  hot.count(a, "grants"); // the row counted last
  hot.count(b, "requests"); // takes a's row over (capacity 1)
  hot.count(a, "grants"); // a again: must take the row back, not count on b's
  assert.deepEqual(
    hot.top(5).map((r) => [r.key, r.total, r.error, r.requests, r.grants]),
    [[a, 4, 3, 0, 1]],
  );
  // A key equal in value to the last one counts on its row, whichever string object carries it.
  const c = new HotKeys(4);
  c.count(keyFromText("same"), "requests");
  c.count(keyFromText(["s", "a", "m", "e"].join("")), "grants");
  assert.deepEqual(
    c.top(5).map((r) => [r.key, r.total, r.requests, r.grants]),
    [["same", 2, 1, 1]],
  );
});

test("fast histogram - buckets are upper bounds (le), one beyond the last", () => {
  const h = new FastHistogram([0.001, 0.01]);
  for (const v of [0.0005, 0.001, 0.002, 5]) h.observe(v);
  assert.deepEqual([...h.counts], [2, 1, 1]);
  assert.equal(h.count, 4);
  assert.ok(Math.abs(h.sum - 5.0035) < 1e-9);
});

test("metrics - exposition of the fast histograms and counters, per member registry", async () => {
  const one = new Metrics();
  const two = new Metrics();
  one.grantLatency.write.observe(0.0002);
  one.counts.grants += 3;
  one.fenceFinished("client_reconnect", "fenced");
  const text = await one.text();
  assert.match(text, /^# TYPE keylock_grant_latency_seconds histogram$/m);
  assert.match(text, /^keylock_grant_latency_seconds_bucket\{mode="write",le="0\.0001"\} 0$/m);
  assert.match(text, /^keylock_grant_latency_seconds_bucket\{mode="write",le="0\.00025"\} 1$/m);
  assert.match(text, /^keylock_grant_latency_seconds_bucket\{mode="write",le="\+Inf"\} 1$/m);
  assert.match(text, /^keylock_grant_latency_seconds_count\{mode="write"\} 1$/m);
  assert.match(text, /^keylock_grants_total 3$/m);
  assert.match(text, /^keylock_fences_total\{reason="client_reconnect",outcome="fenced"\} 1$/m);
  assert.match(text, /^keylock_clients 0$/m, "no server attached: server gauges read 0");
  assert.equal(await one.value("keylock_grant_latency_seconds_count", { mode: "write" }), 1);
  assert.equal(await two.value("keylock_grants_total"), 0, "members in one process do not share metrics");
});
