import { test } from "node:test";
import assert from "node:assert/strict";
import { SlotMap } from "../../src/core/slot-map.js";

test("slot map - behaves as a Map under random set, delete, get, has and clear (seeded)", () => {
  let seed = 11;
  const random = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  const slot = new SlotMap<number, number>();
  const reference = new Map<number, number>();
  for (let step = 0; step < 20_000; step++) {
    const key = random(5) === 0 ? NaN : random(6);
    const op = random(100);
    if (op < 40) {
      assert.equal(slot.set(key, step), slot);
      reference.set(key, step);
    } else if (op < 80) assert.equal(slot.delete(key), reference.delete(key), `step ${step} (seed 11)`);
    else if (op < 99) assert.equal(slot.has(key), reference.has(key), `step ${step} (seed 11)`);
    else {
      slot.clear();
      reference.clear();
    }
    assert.equal(slot.get(key), reference.get(key), `step ${step} (seed 11)`);
    assert.equal(slot.size, reference.size, `step ${step} (seed 11)`);
    assert.deepEqual(slot.values(), [...reference.values()], `step ${step} (seed 11): values in insertion order`);
    assert.deepEqual(slot.keys(), [...reference.keys()], `step ${step} (seed 11): keys in insertion order`);
  }
});

test("slot map - one entry at a time stays in the slot; a second one goes to the map and back", () => {
  const map = new SlotMap<number, string>();
  map.set(1, "a");
  map.set(2, "b");
  assert.equal(map.size, 2);
  assert.equal(map.delete(1), true);
  map.set(3, "c"); // the map still holds 2: 3 joins it there
  assert.deepEqual([map.get(1), map.get(2), map.get(3), map.size], [undefined, "b", "c", 2]);
  assert.equal(map.delete(2), true);
  assert.equal(map.delete(3), true);
  assert.equal(map.delete(3), false);
  map.set(4, "d");
  assert.deepEqual([map.get(4), map.has(4), map.size], ["d", true, 1]);
});
