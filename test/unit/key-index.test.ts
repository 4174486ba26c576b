// The ordered key index behind admin pages (src/core/key-index.ts) and the lock table's use of it: exact
// order against a sorted reference under random inserts and deletes (seeded: replay with KEYLOCK_SEED),
// and a page's cost counted in key comparisons, which must not grow with the table beyond log n.
import { test } from "node:test";
import assert from "node:assert/strict";
import { KEY_INDEX_CHUNK_KEYS_MAX, KeyIndex } from "../../src/core/key-index.js";
import { compareKeys, keyFromBytes, keyFromText, type Key } from "../../src/core/keys.js";
import { LockServer, WriteSeqCounter } from "../../src/core/lock-server.js";
import { prng } from "../support/prng.js";

function randomKey(random: () => number): Key {
  const bytes = new Uint8Array(1 + Math.floor(random() * 4));
  for (let i = 0; i < bytes.length; i++) bytes[i] = random() < 0.5 ? Math.floor(random() * 4) : Math.floor(random() * 256);
  return keyFromBytes(bytes);
}

function take<T>(iterator: Iterator<T>, n: number): T[] {
  const out: T[] = [];
  for (let next = iterator.next(); next.done !== true && out.length < n; next = iterator.next()) out.push(next.value);
  return out;
}

test("key index - random inserts and deletes keep bytewise order and pages after any key", () => {
  const envSeed = process.env.KEYLOCK_SEED;
  const seed = envSeed !== undefined ? Number(envSeed) >>> 0 : Math.floor(Math.random() * 2 ** 32);
  console.log(`key index randomized: KEYLOCK_SEED=${seed}`);
  const random = prng(seed);
  const index = new KeyIndex();
  const reference = new Set<Key>();
  for (let step = 0; step < 20_000; step++) {
    const key = randomKey(random);
    // Grow to several chunks, then shrink, so splits and emptied chunks both happen; now and then a bulk
    // insert (recovery), with duplicates and keys already present.
    if (step % 997 === 0) {
      const batch = Array.from({ length: 300 }, () => randomKey(random));
      batch.push(...[...reference].slice(0, 20), batch[0]!);
      index.insertSorted(batch.sort(compareKeys));
      for (const k of batch) reference.add(k);
    } else if (random() < (step < 12_000 ? 0.75 : 0.2)) {
      assert.equal(index.insert(key), !reference.has(key), `insert at step ${step} (KEYLOCK_SEED=${seed})`);
      reference.add(key);
    } else {
      assert.equal(index.delete(key), reference.has(key), `delete at step ${step} (KEYLOCK_SEED=${seed})`);
      reference.delete(key);
    }
    assert.equal(index.size, reference.size, `size at step ${step} (KEYLOCK_SEED=${seed})`);
    if (step % 1000 === 999) {
      const sorted = [...reference].sort(compareKeys);
      assert.deepEqual([...index.after(null)], sorted, `all keys at step ${step} (KEYLOCK_SEED=${seed})`);
      for (let probe = 0; probe < 20; probe++) {
        const after = random() < 0.5 && sorted.length > 0 ? sorted[Math.floor(random() * sorted.length)]! : randomKey(random);
        assert.deepEqual(take(index.after(after), 50), sorted.filter((k) => k > after).slice(0, 50), `page after a key (KEYLOCK_SEED=${seed})`);
      }
    }
  }
  assert.ok(reference.size > KEY_INDEX_CHUNK_KEYS_MAX, "the run spanned several chunks");
});

test("key index - keys are ordered bytewise, not by UTF-16 text rules", () => {
  const index = new KeyIndex();
  const keys = [keyFromBytes(new Uint8Array([0xff])), keyFromText("b"), keyFromBytes(new Uint8Array([0])), keyFromText("a/1"), keyFromText("a")];
  for (const key of keys) index.insert(key);
  assert.deepEqual([...index.after(null)], [...keys].sort(compareKeys));
  assert.deepEqual([...index.after(keyFromText("a"))], [keyFromText("a/1"), keyFromText("b"), keyFromBytes(new Uint8Array([0xff]))]);
});

/** Comparisons one admin page of `rows` keys costs in a lock table of `keys` keys (one entry each). */
function pageComparisons(keys: number, rows: number): number {
  const server = new LockServer({ writeSeq: new WriteSeqCounter() });
  for (let i = 0; i < keys; i++) server.onRequest(1n + BigInt(i % 7), 1, { key: keyFromText(`k/${String(i).padStart(8, "0")}`), oldMode: "null", newMode: "read", noQueue: false });
  const cursor = keyFromText(`k/${String(Math.floor(keys / 2)).padStart(8, "0")}`);
  const before = server.keyIndex.comparisons;
  const page = take(server.keysAfter(cursor), rows);
  for (const key of page) server.entriesOf(key);
  assert.equal(page.length, rows);
  return server.keyIndex.comparisons - before;
}

test("key index - an admin page costs O(log n) comparisons, whatever the table's size", () => {
  const small = pageComparisons(2_000, 100);
  const large = pageComparisons(200_000, 100);
  // A full sort of 200,000 keys would take millions of comparisons; a page takes about log2(n) of them.
  assert.ok(small <= 2 * Math.log2(2_000) + 4, `small table: ${small} comparisons`);
  assert.ok(large <= 2 * Math.log2(200_000) + 4, `large table: ${large} comparisons`);
  assert.ok(large - small <= 2 * Math.log2(100) + 2, `the page cost grew from ${small} to ${large}`);
});

test("key index - keys recovered under the hold are indexed in bulk and pages see them, in order, at any time", () => {
  const server = new LockServer({ writeSeq: new WriteSeqCounter() });
  server.holdForRecovery();
  const k = (text: string): Key => keyFromText(text);
  const lock = (key: string) => ({
    key: k(key),
    mode: "read" as const,
    writeSeq: 0n,
    grantTerm: 0n,
    grantNo: 0,
    grantTag: 0,
  });
  server.onRecoverBatch(1n, [lock("b"), lock("d"), lock("f")]);
  server.onRecoverBatch(2n, [lock("a"), lock("d"), lock("e")]);
  assert.deepEqual(take(server.keysAfter(k("a")), 10), ["b", "d", "e", "f"].map(k), "a page during recovery");
  server.onRecoverBatch(3n, [lock("c"), lock("g")]);
  server.onClientGone(3n); // a fenced client reclaimed during recovery: its keys go
  server.onRecoverBatch(3n, [lock("c")]);
  server.onRecoverBatch(4n, [lock("0")]);
  server.onRequest(5n, 1, { key: k("h"), oldMode: "null", newMode: "write", noQueue: false });
  server.resumeAfterRecovery();
  assert.deepEqual(take(server.keysAfter(null), 20), ["0", "a", "b", "c", "d", "e", "f", "h"].map(k));
  assert.equal(server.keyIndex.size, server.keyCount);
  server.onRequest(5n, 2, { key: k("bb"), oldMode: "null", newMode: "write", noQueue: false });
  assert.deepEqual(take(server.keysAfter(k("b")), 2), ["bb", "c"].map(k), "indexed one by one again after recovery");
});

test("key index - deleteSorted removes exactly the present keys of a sorted list, like delete one by one", () => {
  const envSeed = process.env.KEYLOCK_SEED;
  const seed = envSeed !== undefined ? Number(envSeed) >>> 0 : Math.floor(Math.random() * 2 ** 32);
  console.log(`key index deleteSorted randomized: KEYLOCK_SEED=${seed}`);
  const random = prng(seed);
  for (let round = 0; round < 60; round++) {
    const index = new KeyIndex();
    const reference = new Set<Key>();
    // Several chunks: built one by one (full chunks) or in bulk (half-full chunks), or both.
    const count = Math.floor(random() * 3000);
    const keys = Array.from({ length: count }, () => randomKey(random));
    if (round % 2 === 0) for (const key of keys) index.insert(key);
    else index.insertSorted([...keys].sort(compareKeys));
    for (const key of keys) reference.add(key);
    // Delete a sorted, repeat-free mix: a dense run, scattered keys, whole chunks, keys absent.
    const present = [...reference].sort(compareKeys);
    const doomed = new Set<Key>();
    const density = random();
    for (const key of present) if (random() < density) doomed.add(key);
    const start = Math.floor(random() * present.length);
    for (let i = start; i < Math.min(present.length, start + Math.floor(random() * 1200)); i++) doomed.add(present[i]!);
    for (let i = 0; i < 50; i++) doomed.add(randomKey(random));
    const sorted = [...doomed].sort(compareKeys);
    const expected = sorted.filter((key) => reference.has(key)).length;
    assert.equal(index.deleteSorted(sorted), expected, `round ${round} (KEYLOCK_SEED=${seed})`);
    for (const key of sorted) reference.delete(key);
    assert.equal(index.size, reference.size);
    const left = [...reference].sort(compareKeys);
    assert.deepEqual([...index.after(null)], left, `round ${round} (KEYLOCK_SEED=${seed})`);
    for (const key of sorted.slice(0, 20)) assert.equal(index.has(key), false);
    // Still a working index: inserts, deletes and pages after it.
    for (const key of sorted.slice(0, 30)) assert.equal(index.insert(key), true);
    for (const key of sorted.slice(0, 30)) assert.equal(index.delete(key), true);
    for (const key of left.slice(0, 30)) assert.equal(index.has(key), true);
    if (left.length > 0) {
      const after = left[Math.floor(random() * left.length)]!;
      assert.deepEqual(take(index.after(after), 40), left.filter((k) => k > after).slice(0, 40));
    }
  }
  assert.equal(new KeyIndex().deleteSorted([keyFromText("a")]), 0);
});

test("key index - deleteSorted of a contiguous run costs about one comparison per key, not a search each", () => {
  const index = new KeyIndex();
  const keys = Array.from({ length: 100_000 }, (_, i) => keyFromText(`k/${String(i).padStart(6, "0")}`));
  index.insertSorted(keys);
  const before = index.comparisons;
  assert.equal(index.deleteSorted(keys.slice(40_000, 50_000)), 10_000);
  const used = index.comparisons - before;
  // One search from scratch per key would take about log2(100,000) ≈ 17 comparisons each (170,000).
  assert.ok(used <= 3 * 10_000, `${used} comparisons for 10,000 contiguous keys`);
  assert.equal(index.size, 90_000);
  assert.deepEqual(take(index.after(keys[39_999]!), 2), [keys[50_000], keys[50_001]]);
});
