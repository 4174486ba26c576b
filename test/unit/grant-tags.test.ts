// Grant tags (src/core/grant-tags.ts): SipHash-2-4 against the reference vectors, and what a tag binds.
import { test } from "node:test";
import assert from "node:assert/strict";
import { GrantTags, grantIsLater, sipHash24 } from "../../src/core/grant-tags.js";
import { keyFromBytes, keyFromText } from "../../src/core/keys.js";

// The reference implementation's vectors (SipHash paper, Appendix A; the reference test.c's vectors_sip64):
// key 00 01 .. 0f, message 00 01 .. n-1, for n = 0 .. 17. Together they cover every tail length and
// messages of one, two and three blocks.
const VECTORS = [
  0x726fdb47dd0e0e31n,
  0x74f839c593dc67fdn,
  0x0d6c8009d9a94f5an,
  0x85676696d7fb7e2dn,
  0xcf2794e0277187b7n,
  0x18765564cd99a68dn,
  0xcbc9466e58fee3cen,
  0xab0200f58b01d137n,
  0x93f5f5799a932462n,
  0x9e0082df0ba9e4b0n,
  0x7a5dbbc594ddb9f3n,
  0xf4b32f46226bada7n,
  0x751e8fbc860ee5fbn,
  0x14ea5627c0843d90n,
  0xf723ca908e7af2een,
  0xa129ca6149be45e5n,
  0x3f2acc7f57c29bdbn,
  0x699ae9f52cbe4794n,
];

const KEY = Uint8Array.from({ length: 16 }, (_, i) => i);

test("grant tags - SipHash-2-4 matches the reference vectors", () => {
  VECTORS.forEach((expected, n) => {
    const message = Uint8Array.from({ length: n }, (_, i) => i);
    assert.equal(sipHash24(KEY, message), expected, `message of ${n} bytes`);
  });
});

/** SipHash-2-4 written plainly over BigInt, apart from the 32-bit implementation under test. */
function referenceSipHash(key: Uint8Array, message: Uint8Array): bigint {
  const M = (1n << 64n) - 1n;
  const rotl = (x: bigint, b: bigint): bigint => ((x << b) | (x >> (64n - b))) & M;
  const word = (bytes: Uint8Array, at: number, n: number): bigint => {
    let w = 0n;
    for (let i = 0; i < n; i++) w |= BigInt(bytes[at + i]!) << BigInt(8 * i);
    return w;
  };
  const k0 = word(key, 0, 8);
  const k1 = word(key, 8, 8);
  let v0 = k0 ^ 0x736f6d6570736575n;
  let v1 = k1 ^ 0x646f72616e646f6dn;
  let v2 = k0 ^ 0x6c7967656e657261n;
  let v3 = k1 ^ 0x7465646279746573n;
  const round = (): void => {
    v0 = (v0 + v1) & M;
    v1 = rotl(v1, 13n);
    v1 ^= v0;
    v0 = rotl(v0, 32n);
    v2 = (v2 + v3) & M;
    v3 = rotl(v3, 16n);
    v3 ^= v2;
    v0 = (v0 + v3) & M;
    v3 = rotl(v3, 21n);
    v3 ^= v0;
    v2 = (v2 + v1) & M;
    v1 = rotl(v1, 17n);
    v1 ^= v2;
    v2 = rotl(v2, 32n);
  };
  const whole = message.length - (message.length % 8);
  for (let at = 0; at <= whole; at += 8) {
    const m =
      at < whole
        ? word(message, at, 8)
        : word(message, at, message.length - whole) | (BigInt(message.length & 0xff) << 56n);
    v3 ^= m;
    round();
    round();
    v0 ^= m;
  }
  v2 ^= 0xffn;
  for (let i = 0; i < 4; i++) round();
  return v0 ^ v1 ^ v2 ^ v3;
}

test("grant tags - the 32-bit SipHash agrees with a BigInt one on random keys and lengths (seeded)", () => {
  const seed = Number(process.env.KEYLOCK_SEED ?? Date.now() % 1_000_000);
  console.log(`# grant tags seed ${seed} (replay: KEYLOCK_SEED=${seed})`);
  let state = seed >>> 0 || 1;
  const byte = (): number => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) & 0xff;
  };
  for (let run = 0; run < 300; run++) {
    const key = Uint8Array.from({ length: 16 }, byte);
    const message = Uint8Array.from({ length: run % 70 }, byte);
    assert.equal(sipHash24(key, message), referenceSipHash(key, message), `seed ${seed} run ${run}`);
  }
});

test("grant tags - a tag binds the rid, key, mode, term and grant number, and fits 53 bits", () => {
  const tags = new GrantTags(KEY);
  const key = keyFromText("orders/42");
  const tag = tags.tag(0x1234n, key, "write", 3n, 17);
  assert.ok(Number.isSafeInteger(tag) && tag >= 0);
  assert.equal(tags.tag(0x1234n, key, "write", 3n, 17), tag, "pure");
  const variants = [
    tags.tag(0x1235n, key, "write", 3n, 17),
    tags.tag(0x1234n, keyFromText("orders/43"), "write", 3n, 17),
    tags.tag(0x1234n, key, "read", 3n, 17),
    tags.tag(0x1234n, key, "write_only", 3n, 17),
    tags.tag(0x1234n, key, "write", 4n, 17),
    tags.tag(0x1234n, key, "write", 3n, 18),
    tags.tag(0x1234n, key, "write", 3n, 17 + 2 ** 32),
    tags.tag(0x1234n | (1n << 63n), key, "write", 3n, 17),
    new GrantTags(new Uint8Array(16)).tag(0x1234n, key, "write", 3n, 17),
  ];
  for (const other of variants) assert.notEqual(other, tag);
  // Binary keys of every length up to three blocks past the fixed fields, byte values 0..255.
  for (let length = 0; length < 40; length++) {
    const bytes = Uint8Array.from({ length }, (_, i) => (i * 37 + 255) & 0xff);
    assert.equal(
      tags.tag(1n, keyFromBytes(bytes), "read", 1n, 1),
      tags.tag(1n, keyFromBytes(bytes), "read", 1n, 1),
    );
  }
  assert.throws(() => new GrantTags(new Uint8Array(15)), RangeError);
});

test("grant tags - verify accepts the granted mode and the downgrades an invalidation can leave", () => {
  const tags = new GrantTags(KEY);
  const key = keyFromText("k");
  const proof = (mode: "read" | "write" | "write_only", grantNo = 5) => ({
    grantTerm: 2n,
    grantNo,
    grantTag: tags.tag(9n, key, mode, 2n, grantNo),
  });
  assert.equal(tags.verify(9n, { key, mode: "write", ...proof("write") }), true);
  assert.equal(tags.verify(9n, { key, mode: "read", ...proof("write") }), true, "write invalidated to read");
  assert.equal(tags.verify(9n, { key, mode: "read", ...proof("read") }), true);
  assert.equal(tags.verify(9n, { key, mode: "write_only", ...proof("write_only") }), true);
  assert.equal(
    tags.verify(9n, { key, mode: "write", ...proof("read") }),
    false,
    "a read grant claimed as write",
  );
  assert.equal(tags.verify(9n, { key, mode: "write_only", ...proof("write") }), false);
  assert.equal(tags.verify(9n, { key, mode: "read", ...proof("write_only") }), false);
  assert.equal(tags.verify(8n, { key, mode: "write", ...proof("write") }), false, "another client's proof");
  assert.equal(tags.verify(9n, { key, mode: "write", ...proof("write"), grantNo: 6 }), false);
  assert.equal(tags.verify(9n, { key, mode: "write", grantTerm: 0n, grantNo: 0, grantTag: 0 }), false);
  assert.equal(tags.verify(9n, { key, mode: "null", grantTerm: 0n, grantNo: 0, grantTag: 0 }), false);
});

test("grant tags - a later grant: a later term, or later in one term", () => {
  assert.equal(grantIsLater(2n, 1, 1n, 900), true);
  assert.equal(grantIsLater(1n, 901, 1n, 900), true);
  assert.equal(grantIsLater(1n, 900, 1n, 900), false);
  assert.equal(grantIsLater(1n, 900, 2n, 1), false);
});
