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

/** The summary as it was with a Map for its index: the reference the hashed index must match exactly. */
class MapIndexedHotKeys {
  readonly rows: { key: Key; total: number; error: number; counts: Record<HotKeyMessage, number> }[] = [];
  readonly index = new Map<Key, MapIndexedHotKeys["rows"][number]>();
  cursor = 0;
  floor = 0;
  constructor(readonly capacity: number) {}
  count(key: Key, kind: HotKeyMessage): void {
    let row = this.index.get(key);
    if (row === undefined) {
      if (this.rows.length < this.capacity) {
        row = { key, total: 0, error: 0, counts: { requests: 0, invalidations: 0, grants: 0, responses: 0 } };
        this.rows.push(row);
      } else {
        row = this.leastCounted();
        this.index.delete(row.key);
        row.key = key;
        row.error = row.total;
        row.counts = { requests: 0, invalidations: 0, grants: 0, responses: 0 };
      }
      this.index.set(key, row);
    }
    row.total++;
    row.counts[kind]++;
  }
  leastCounted(): MapIndexedHotKeys["rows"][number] {
    for (let steps = 0; ; steps++) {
      if (steps === this.rows.length) {
        this.floor = Math.min(...this.rows.map((r) => r.total));
        steps = 0;
      }
      const row = this.rows[this.cursor]!;
      this.cursor = this.cursor + 1 === this.rows.length ? 0 : this.cursor + 1;
      if (row.total <= this.floor) return row;
    }
  }
}

test("hot keys - the hashed index answers exactly as a Map would (randomised; replacements, probing runs, returning keys)", () => {
  const seed = envInteger("KEYLOCK_SEED", Math.floor(Math.random() * 2 ** 31));
  console.log(`# hot-keys index seed ${seed} (replay with KEYLOCK_SEED=${seed})`);
  const random = prng(seed);
  const kinds: HotKeyMessage[] = ["requests", "invalidations", "grants", "responses"];
  for (const capacity of [1, 2, 3, 8, 33]) {
    const hot = new HotKeys(capacity);
    const reference = new MapIndexedHotKeys(capacity);
    for (let i = 0; i < 20_000; i++) {
      // Few and many distinct keys, short and long, some heavy: rows are replaced often and keys come back.
      const spread = random() < 0.5 ? 3 * capacity : 1000;
      const n = Math.floor(random() * random() * spread);
      const key = keyFromText(random() < 0.1 ? `long/${"x".repeat(n % 300)}/${n}` : `k${n}`);
      const kind = kinds[Math.floor(random() * kinds.length)]!;
      hot.count(key, kind);
      reference.count(key, kind);
      if (i % 500 === 0 || i === 19_999) {
        const expected = reference.rows
          .map((r) => [r.key, r.total, r.error, r.counts.requests, r.counts.invalidations, r.counts.grants, r.counts.responses])
          .sort((a, b) => (b[1] as number) - (a[1] as number) || String(a[0]).localeCompare(String(b[0])));
        const actual = hot
          .top(capacity)
          .map((r) => [r.key, r.total, r.error, r.requests, r.invalidations, r.grants, r.responses])
          .sort((a, b) => (b[1] as number) - (a[1] as number) || String(a[0]).localeCompare(String(b[0])));
        assert.deepEqual(actual, expected, `capacity ${capacity}, after ${i + 1} messages`);
      }
    }
  }
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
