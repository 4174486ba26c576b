// Unit tests of the recovery tracker for what transcripts show badly: 64-bit rids, and a seeded
// randomized run against a model that checks the finished-exactly-once rule whatever the order of
// prepares, finishes and replays. Replay a failing run with KEYLOCK_SEED=<seed>.
import { test } from "node:test";
import assert from "node:assert/strict";
import { InvariantError } from "../../src/core/errors.js";
import { RecoveryTracker, type RecoveryPart } from "../../src/core/recovery.js";
import { prng } from "../support/prng.js";

test("recovery - pendingRids orders full 64-bit rids numerically", () => {
  const tracker = new RecoveryTracker();
  const rids = [0xffff_ffff_ffff_fffen, 10n, 2n, 1n << 53n, (1n << 53n) + 1n, 0x8000_0000_0000_0000n];
  for (const rid of rids) tracker.prepare(rid, ["greeting", "locks"]);
  assert.equal(tracker.begin(), false);
  assert.deepEqual(
    tracker.pendingRids(),
    [...rids].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)),
  );
  assert.deepEqual(tracker.pendingRids().slice(0, 2), [2n, 10n]);
  assert.equal(tracker.isPending((1n << 53n) + 1n, "locks"), true);
  assert.equal(tracker.isPending(1n << 53n, "locks"), true);
  tracker.finish((1n << 53n) + 1n, ["greeting", "locks"]);
  assert.equal(tracker.isPending(1n << 53n), true, "a neighbouring rid is not confused with it");
});

test("recovery - pendingRids returns a copy", () => {
  const tracker = new RecoveryTracker();
  tracker.prepare(5n, ["locks"]);
  tracker.begin();
  tracker.pendingRids().pop();
  assert.deepEqual(tracker.pendingRids(), [5n]);
});

test("recovery - prepare after begin and a second begin are bugs (InvariantError)", () => {
  const tracker = new RecoveryTracker();
  tracker.begin();
  assert.throws(() => tracker.prepare(1n, ["greeting"]), InvariantError);
  assert.throws(() => tracker.begin(), InvariantError);
});

test("recovery - B36: shutdown mid-recovery leaves a tracker as new", () => {
  const tracker = new RecoveryTracker();
  tracker.prepare(1n, ["greeting", "locks"]);
  tracker.prepare(2n, ["locks"]);
  tracker.begin();
  tracker.finish(1n, ["greeting"]);
  tracker.shutdown();
  assert.equal(tracker.begun, false);
  assert.equal(tracker.finished, false);
  assert.deepEqual(tracker.pendingRids(), []);
  assert.equal(tracker.pendingCount, 0);
  assert.equal(tracker.finish(2n, ["locks"]), false);
  // As new: it can be prepared and begun again.
  tracker.prepare(3n, ["greeting"]);
  assert.equal(tracker.begin(), false);
  assert.equal(tracker.finish(3n, ["greeting"]), true);
});


const PART_SETS: readonly (readonly RecoveryPart[])[] = [
  [],
  ["greeting"],
  ["locks"],
  ["greeting", "locks"],
  ["locks", "greeting"],
];

test("recovery - randomized prepares, finishes and replays: finished exactly once, and only when begun and empty", () => {
  const envSeed = process.env.KEYLOCK_SEED;
  const baseSeed = envSeed !== undefined ? Number(envSeed) >>> 0 : Math.floor(Math.random() * 2 ** 32);
  console.log(`recovery randomized: KEYLOCK_SEED=${baseSeed}`);
  for (let round = 0; round < 300; round++) {
    const random = prng((baseSeed + round) >>> 0);
    const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
    const tracker = new RecoveryTracker();
    const model = new Map<bigint, Set<RecoveryPart>>();
    const rids = [1n, 2n, 3n, 4n, 5n, 6n].slice(0, 1 + Math.floor(random() * 6));
    const log: string[] = [];
    let reports = 0;
    try {
      // Prepare some clients, maybe finish some early (before begin), then begin.
      for (const rid of rids) {
        if (random() < 0.2) continue;
        for (let n = 0; n < 1 + Math.floor(random() * 2); n++) {
          const parts = pick(PART_SETS);
          log.push(`prepare ${rid} ${parts.join(",")}`);
          tracker.prepare(rid, parts);
          if (parts.length > 0) model.set(rid, new Set([...(model.get(rid) ?? []), ...parts]));
        }
      }
      for (let i = 0; i < 3; i++) {
        if (random() < 0.5) continue;
        const rid = pick(rids);
        const parts = pick(PART_SETS);
        log.push(`early finish ${rid} ${parts.join(",")}`);
        assert.equal(tracker.finish(rid, parts), false, "finished before begin");
        const left = model.get(rid);
        for (const part of parts) left?.delete(part);
        if (left?.size === 0) model.delete(rid);
      }
      log.push("begin");
      if (tracker.begin()) reports++;
      assert.equal(reports, model.size === 0 ? 1 : 0, "begin reports exactly when nothing is pending");
      // Finish parts in any order, with replays, until nothing is pending; then a few more replays.
      let extra = 10;
      while (model.size > 0 || extra-- > 0) {
        const rid = pick(rids);
        const parts = pick(PART_SETS);
        log.push(`finish ${rid} ${parts.join(",")}`);
        const wasEmpty = model.size === 0;
        const reported = tracker.finish(rid, parts);
        const left = model.get(rid);
        for (const part of parts) left?.delete(part);
        if (left?.size === 0) model.delete(rid);
        assert.equal(
          reported,
          !wasEmpty && model.size === 0,
          "finish reports exactly the call that emptied it",
        );
        if (reported) reports++;
        assert.equal(tracker.finished, model.size === 0);
        assert.deepEqual(
          tracker.pendingRids(),
          [...model.keys()].sort((a, b) => (a < b ? -1 : 1)),
        );
        for (const r of rids) {
          for (const part of ["greeting", "locks"] as const) {
            assert.equal(
              tracker.isPending(r, part),
              model.get(r)?.has(part) ?? false,
              `isPending(${r}, ${part})`,
            );
          }
        }
      }
      assert.equal(reports, 1, "recovery reported finished exactly once");
    } catch (error) {
      console.log(`failed in round ${round} (KEYLOCK_SEED=${baseSeed}):\n${log.slice(-30).join("\n")}`);
      throw error;
    }
  }
});
