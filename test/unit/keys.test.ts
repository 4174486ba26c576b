import { test } from "node:test";
import assert from "node:assert/strict";
import { compareKeys, drawRid, isReservedRid, keyFromBytes, keyFromText, keyToBytes, keyToHex, keyToText } from "../../src/core/keys.js";

test("keys - text round-trips through UTF-8 bytes", () => {
  const key = keyFromText("orders/42/ü€");
  assert.equal(keyToText(key), "orders/42/ü€");
  assert.deepEqual(keyToBytes(key), new TextEncoder().encode("orders/42/ü€"));
});

test("keys - string order is bytewise order", () => {
  const raw = [[0xff], [0x00], [0x00, 0x00], [0x7f, 0x01], [0x80], []].map((b) => new Uint8Array(b));
  const byKey = raw.map(keyFromBytes).sort(compareKeys).map(keyToHex);
  const byBytes = raw
    .slice()
    .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
    .map((b) => Buffer.from(b).toString("hex"));
  assert.deepEqual(byKey, byBytes);
});

test("keys - large keys convert without stack overflow", () => {
  const bytes = new Uint8Array(100_000).map((_, i) => i % 256);
  assert.deepEqual(keyToBytes(keyFromBytes(bytes)), bytes);
});

test("rids - 0 and 2^64-1 are reserved and drawn again; every other 64-bit value is a rid", () => {
  assert.equal(isReservedRid(0n), true);
  assert.equal(isReservedRid(0xffff_ffff_ffff_ffffn), true);
  for (const rid of [1n, 2n, 0x8000_0000_0000_0000n, 0xffff_ffff_ffff_fffen]) assert.equal(isReservedRid(rid), false);
  // A source that yields the reserved values first: drawRid skips both and returns the next draw as is.
  const draws = [0n, 0xffff_ffff_ffff_ffffn, 0n, 0xffff_ffff_ffff_fffen];
  let calls = 0;
  assert.equal(drawRid(() => draws[calls++]!), 0xffff_ffff_ffff_fffen);
  assert.equal(calls, 4);
  assert.equal(drawRid(() => 1n), 1n);
});
