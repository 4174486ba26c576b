// Unit tests of the server lock table for what transcripts show badly: exact effect shapes, error types,
// malformed peer input, binary keys, broken write seq sources; and a seeded randomized run that checks
// the reference §3.11 invariants after every step. Replay a failing run with KEYLOCK_SEED=<seed>.
import { test } from "node:test";
import assert from "node:assert/strict";
import { InvariantError, ProtocolError } from "../../src/core/errors.js";
import { compareKeys, keyFromBytes, keyFromText, keyToHex, type Key } from "../../src/core/keys.js";
import type { LockGrant, LockRequest, RecoveredLock, Rid } from "../../src/core/lock-messages.js";
import { GrantTags } from "../../src/core/grant-tags.js";
import {
  LockServer,
  WriteSeqCounter,
  type LockServerEffect,
  type WriteSeqSource,
} from "../../src/core/lock-server.js";
import { LOCK_MODES, carriesWriteSeq, compatible, type LockMode } from "../../src/core/modes.js";
import { prng } from "../support/prng.js";

const A = 0x1111n;
const B = 0x2222n;
const C = 0x3333n;
const k1 = keyFromText("k1");

function newServer(): LockServer {
  return new LockServer({ writeSeq: new WriteSeqCounter() });
}

function request(key: Key, newMode: LockMode, noQueue = false): LockRequest {
  return { key, oldMode: "null", newMode, noQueue };
}

/** What `new LockServer({ writeSeq })` tags its grants with: a key of 16 zero bytes (and term 1). */
const TAGS = new GrantTags(new Uint8Array(16));

/** The proof a default server (term 1) gives its `grantNo`-th non-null grant: `mode` on `key` to `rid`. */
function proof(
  rid: Rid,
  key: Key,
  mode: LockMode,
  grantNo: number,
): Pick<LockGrant, "grantTerm" | "grantNo" | "grantTag"> {
  return { grantTerm: 1n, grantNo, grantTag: TAGS.tag(rid, key, mode, 1n, grantNo) };
}

/**
 * A recovery report without a grant proof (zeros): enough where no other client's report conflicts with
 * it; a conflicting one never verifies, and loses.
 */
function lockReport(key: Key, mode: LockMode, writeSeq = 0n): RecoveredLock {
  return { key, mode, writeSeq, grantTerm: 0n, grantNo: 0, grantTag: 0 };
}

/** The whole observable table as text, to compare before and after. */
function snapshot(server: LockServer): string {
  const rows = server.dump().map((r) => `${keyToHex(r.key)} ${r.rid} ${r.mode} ${r.state} ${r.requestId}`);
  const stats = server
    .stats()
    .map((s) => `${keyToHex(s.key)} ${s.requests} ${s.invalidations} ${s.responses} ${s.grants}`);
  return [...rows, "--", ...stats, "--", `${server.keyCount} ${server.entryCount} ${server.recovering}`].join(
    "\n",
  );
}

function assertProtocolError(effects: LockServerEffect[], rid: Rid, pattern: RegExp): void {
  assert.equal(effects.length, 1, `one effect expected, got ${effects.map((e) => e.type).join(", ")}`);
  const effect = effects[0]!;
  assert.equal(effect.type, "protocol-error");
  if (effect.type !== "protocol-error") return;
  assert.equal(effect.rid, rid);
  assert.ok(effect.error instanceof ProtocolError);
  assert.equal(effect.error.code, "EPROTO");
  assert.match(effect.error.message, pattern);
}

test("lock server - effects carry the exact message fields", () => {
  const server = newServer();
  assert.deepEqual(server.onRequest(A, 7, request(k1, "write")), [
    {
      type: "grant",
      rid: A,
      requestId: 7,
      grant: { key: k1, oldMode: "null", newMode: "write", writeSeq: 1n, ...proof(A, k1, "write", 1) },
    },
  ]);
  assert.deepEqual(server.onRequest(B, 3, request(k1, "read")), [
    { type: "invalidate", rid: A, invalidation: { key: k1, oldMode: "write", newMode: "read" } },
  ]);
  assert.deepEqual(server.onRequest(B, 4, request(keyFromText("k2"), "write", true)), [
    {
      type: "grant",
      rid: B,
      requestId: 4,
      grant: {
        key: keyFromText("k2"),
        oldMode: "null",
        newMode: "write",
        writeSeq: 2n,
        ...proof(B, keyFromText("k2"), "write", 2),
      },
    },
  ]);
  assert.deepEqual(server.onRequest(A, 8, request(keyFromText("k2"), "read", true)), [
    { type: "refuse", rid: A, requestId: 8, key: keyFromText("k2"), code: "EAGAIN" },
  ]);
  assert.deepEqual(server.onInvalidateResponse(A, { key: k1, oldMode: "write", newMode: "read" }), [
    {
      type: "grant",
      rid: B,
      requestId: 3,
      grant: { key: k1, oldMode: "null", newMode: "read", writeSeq: 0n, ...proof(B, k1, "read", 3) },
    },
  ]);
  assert.deepEqual(server.dump(), [
    { key: k1, rid: A, mode: "read", state: "granted", requestId: 7 },
    { key: k1, rid: B, mode: "read", state: "granted", requestId: 3 },
    { key: keyFromText("k2"), rid: B, mode: "write", state: "granted", requestId: 4 },
  ]);
  assert.deepEqual(server.stats(), [
    { key: k1, requests: 2, invalidations: 1, responses: 1, grants: 2 },
    { key: keyFromText("k2"), requests: 2, invalidations: 0, responses: 0, grants: 1 },
  ]);
  assert.equal(server.keyCount, 2);
  assert.equal(server.entryCount, 3);
});

test("lock server - every non-null grant carries the server's term, its number among non-null grants and its tag", () => {
  const server = newServer();
  const k2 = keyFromText("k2");
  const grants = (effects: LockServerEffect[]): unknown[] =>
    effects.map((e) => (e.type === "grant" ? { rid: e.rid, ...e.grant } : `${e.type} ${e.rid}`));
  const NO_PROOF = { grantTerm: 0n, grantNo: 0, grantTag: 0 };
  assert.deepEqual(grants(server.onRequest(A, 1, request(k1, "write"))), [
    { rid: A, key: k1, oldMode: "null", newMode: "write", writeSeq: 1n, ...proof(A, k1, "write", 1) },
  ]);
  // A gives k1 back: the null grant carries zeros and takes no number.
  assert.deepEqual(grants(server.onRequest(A, 2, request(k1, "null"))), [`invalidate ${A}`]);
  assert.deepEqual(grants(server.onInvalidateResponse(A, { key: k1, oldMode: "write", newMode: "null" })), [
    { rid: A, key: k1, oldMode: "null", newMode: "null", writeSeq: 0n, ...NO_PROOF },
  ]);
  // Two readers, then a nonblock write_only on another key.
  assert.deepEqual(grants(server.onRequest(B, 1, request(k1, "read"))), [
    { rid: B, key: k1, oldMode: "null", newMode: "read", writeSeq: 0n, ...proof(B, k1, "read", 2) },
  ]);
  assert.deepEqual(grants(server.onRequest(A, 3, request(k1, "read"))), [
    { rid: A, key: k1, oldMode: "null", newMode: "read", writeSeq: 0n, ...proof(A, k1, "read", 3) },
  ]);
  assert.deepEqual(grants(server.onRequest(C, 1, request(k2, "write_only", true))), [
    {
      rid: C,
      key: k2,
      oldMode: "null",
      newMode: "write_only",
      writeSeq: 2n,
      ...proof(C, k2, "write_only", 4),
    },
  ]);
  // A grant made by an invalidation response, and one made when recovery resumes, are numbered in turn.
  assert.deepEqual(grants(server.onRequest(C, 2, request(k1, "write"))), [
    `invalidate ${B}`,
    `invalidate ${A}`,
  ]);
  assert.deepEqual(grants(server.onInvalidateResponse(B, { key: k1, oldMode: "read", newMode: "null" })), []);
  assert.deepEqual(grants(server.onInvalidateResponse(A, { key: k1, oldMode: "read", newMode: "null" })), [
    { rid: C, key: k1, oldMode: "null", newMode: "write", writeSeq: 3n, ...proof(C, k1, "write", 5) },
  ]);
  server.holdForRecovery();
  assert.deepEqual(server.onRequest(B, 2, request(k2, "read")), []);
  assert.deepEqual(grants(server.onClientGone(C)), []);
  assert.deepEqual(grants(server.resumeAfterRecovery()), [
    { rid: B, key: k2, oldMode: "null", newMode: "read", writeSeq: 0n, ...proof(B, k2, "read", 6) },
  ]);

  // A server given its tags and term tags with them.
  const tags = new GrantTags(Uint8Array.from({ length: 16 }, (_, i) => 0x10 + i));
  const termed = new LockServer({ writeSeq: new WriteSeqCounter(), tags, term: 7n });
  assert.deepEqual(grants(termed.onRequest(A, 1, request(k1, "read"))), [
    {
      rid: A,
      key: k1,
      oldMode: "null",
      newMode: "read",
      writeSeq: 0n,
      grantTerm: 7n,
      grantNo: 1,
      grantTag: tags.tag(A, k1, "read", 7n, 1),
    },
  ]);
  assert.deepEqual(grants(termed.onRequest(B, 1, request(k2, "write"))), [
    {
      rid: B,
      key: k2,
      oldMode: "null",
      newMode: "write",
      writeSeq: 1n,
      grantTerm: 7n,
      grantNo: 2,
      grantTag: tags.tag(B, k2, "write", 7n, 2),
    },
  ]);
  assert.notEqual(
    tags.tag(A, k1, "read", 7n, 1),
    TAGS.tag(A, k1, "read", 7n, 1),
    "the tag depends on the key",
  );
});

test("lock server - nonblock accepted when only the requester's own grant conflicts: self-invalidation, then the grant", () => {
  const server = newServer();
  server.onRequest(A, 1, request(k1, "write_only"));
  // Same-client write_only vs read conflicts; nobody else holds k1, so the trylock is admitted.
  assert.deepEqual(server.onRequest(A, 2, request(k1, "read", true)), [
    { type: "invalidate", rid: A, invalidation: { key: k1, oldMode: "write_only", newMode: "null" } },
  ]);
  // Others queue behind it, and another trylock is refused meanwhile.
  assert.deepEqual(server.onRequest(B, 1, request(k1, "read", true)), [
    { type: "refuse", rid: B, requestId: 1, key: k1, code: "EAGAIN" },
  ]);
  assert.deepEqual(server.onInvalidateResponse(A, { key: k1, oldMode: "write_only", newMode: "null" }), [
    {
      type: "grant",
      rid: A,
      requestId: 2,
      grant: { key: k1, oldMode: "null", newMode: "read", writeSeq: 0n, ...proof(A, k1, "read", 2) },
    },
  ]);
  // Another client's conflicting grant still refuses it, and nobody is invalidated.
  server.onRequest(B, 2, request(k1, "read"));
  const before = server.dump();
  assert.deepEqual(server.onRequest(A, 3, request(k1, "write", true)), [
    { type: "refuse", rid: A, requestId: 3, key: k1, code: "EAGAIN" },
  ]);
  assert.deepEqual(server.dump(), before, "a refused trylock changes no entry");
});

test("lock server - malformed peer input is a protocol error and changes nothing", () => {
  const server = newServer();
  server.onRequest(A, 1, request(k1, "write"));
  server.onRequest(B, 1, request(k1, "read"));
  const before = snapshot(server);
  const bad = <T>(value: unknown) => value as T;
  const cases: [string, () => LockServerEffect[], RegExp][] = [
    [
      "negative request id",
      () => server.onRequest(B, -1, request(keyFromText("k2"), "read")),
      /request id -1 is not a request id/,
    ],
    [
      "fractional request id",
      () => server.onRequest(B, 1.5, request(keyFromText("k2"), "read")),
      /request id 1.5/,
    ],
    ["key not a string", () => server.onRequest(B, 2, request(bad<Key>(42), "read")), /key 42 is not a key/],
    [
      "key too long",
      () => server.onRequest(B, 2, request(keyFromBytes(new Uint8Array(1025)), "read")),
      /1025 bytes; at most 1024/,
    ],
    [
      "mode out of range",
      () => server.onRequest(B, 2, request(k1, bad<LockMode>(4))),
      /invalid mode 4 requested/,
    ],
    [
      "old mode invalid",
      () => server.onRequest(B, 2, { ...request(k1, "read"), oldMode: bad<LockMode>("x") }),
      /invalid old mode "x"/,
    ],
    [
      "noQueue not boolean",
      () => server.onRequest(B, 2, { ...request(k1, "read"), noQueue: bad<boolean>(1) }),
      /noQueue 1/,
    ],
    [
      "response mode invalid",
      () => server.onInvalidateResponse(A, { key: k1, oldMode: "write", newMode: bad<LockMode>(null) }),
      /invalid mode null/,
    ],
    [
      "response key invalid",
      () => server.onInvalidateResponse(A, { key: bad<Key>(undefined), oldMode: "write", newMode: "read" }),
      /is not a key/,
    ],
    [
      "response upgrade",
      () => server.onInvalidateResponse(A, { key: k1, oldMode: "write", newMode: "write" }),
      /not a downgrade/,
    ],
    [
      "recovery while serving",
      () => server.onRecoverBatch(B, [lockReport(k1, "read")]),
      /no lock recovery is in progress/,
    ],
  ];
  for (const [name, run, pattern] of cases) {
    const rid = name.startsWith("response") ? A : B;
    assertProtocolError(run(), rid, pattern);
    assert.equal(snapshot(server), before, `${name} changed the table`);
  }
});

test("lock server - a recovery batch with any bad report is refused whole and changes nothing", () => {
  const server = new LockServer({ writeSeq: new WriteSeqCounter(), recoveredWriteSeqMax: 1000n });
  server.holdForRecovery();
  assert.deepEqual(server.onRecoverBatch(B, [lockReport(k1, "write", 7n)]), []);
  const k2 = keyFromText("k2");
  const k3 = keyFromText("k3");
  const bad: [string, RecoveredLock[], RegExp][] = [
    [
      "malformed seq",
      [{ ...lockReport(k2, "read"), writeSeq: 5 } as unknown as RecoveredLock],
      /write seq 5 .* is not a sequence/,
    ],
    [
      "invalid mode",
      [{ ...lockReport(k2, "read"), mode: "bogus" } as unknown as RecoveredLock],
      /invalid mode "bogus"/,
    ],
    // Issue 8 item 4: a write seq near 2^64 would have exhausted the fencing tokens for good.
    [
      "seq above the high-water mark",
      [lockReport(k2, "write", (1n << 64n) - 2n)],
      /is above 1000, the highest the cluster can have handed out/,
    ],
    ["seq just above the high-water mark", [lockReport(k2, "write", 1001n)], /is above 1000/],
    ["key twice", [lockReport(k2, "read"), lockReport(k2, "null")], /key "k2" is reported twice/],
    // Out of order, the repeat apart from the first report: found all the same (ascending keys cannot repeat).
    [
      "key twice, apart",
      [lockReport(k2, "read"), lockReport(k3, "read"), lockReport(k2, "read")],
      /key "k2" is reported twice/,
    ],
    [
      "a bad report after good ones",
      [lockReport(k1, "null"), lockReport(k2, "read"), lockReport(k3, "write", 1001n)],
      /key "k3" is above 1000/,
    ],
    // A's reports carry no grant proof: one that conflicts with B's does not verify, and loses.
    [
      "two writers",
      [lockReport(k3, "read"), lockReport(k1, "write", 9n)],
      /mode write, which conflicts with write held by rid 0000000000002222/,
    ],
    ["reader vs writer", [lockReport(k1, "read")], /conflicts with write/],
    ["already held", [lockReport(k1, "write", 8n)], /already holds it/],
  ];
  const before = snapshot(server);
  for (const [name, locks, pattern] of bad) {
    const rid = name === "already held" ? B : A;
    const effects = server.onRecoverBatch(rid, locks);
    assert.equal(effects.length, 1, name);
    assertProtocolError(effects, rid, pattern);
    assert.match((effects[0] as { error: Error }).error.message, /refused, nothing recovered/);
    assert.equal(snapshot(server), before, `${name} changed the table`);
  }
  // Compatible reports on a shared key are accepted, and the next token is above every reported one.
  assert.deepEqual(server.onRecoverBatch(A, [lockReport(k1, "null"), lockReport(k2, "write", 1000n)]), []);
  server.resumeAfterRecovery();
  const grant = server.onRequest(C, 1, request(keyFromText("k4"), "write"))[0];
  assert.equal(grant?.type === "grant" && grant.grant.writeSeq, 1001n);
});

test("lock server - a recovery batch out of key order but without repeats is taken whole", () => {
  const server = new LockServer({ writeSeq: new WriteSeqCounter() });
  server.holdForRecovery();
  const keys = ["k3", "k1", "k2"].map((k) => keyFromText(k));
  assert.deepEqual(
    server.onRecoverBatch(
      A,
      keys.map((key, i) => lockReport(key, "read", BigInt(i))),
    ),
    [],
  );
  assert.deepEqual(
    server.onRecoverBatch(
      B,
      keys.map((key) => lockReport(key, "read")),
    ),
    [],
  );
  assert.equal(server.clientLoad(A).entries, 3);
  assert.equal(server.clientLoad(B).entries, 3);
  assert.equal(server.keyIndex.size, 3);
});

test("lock server - a refused recovery batch of new keys leaves no trace (table, index, counters, key list)", () => {
  const server = new LockServer({ writeSeq: new WriteSeqCounter(), recoveredWriteSeqMax: 5000n });
  server.holdForRecovery();
  const key = (i: number): Key => keyFromText(`rb/${String(i).padStart(4, "0")}`);
  assert.deepEqual(server.onRecoverBatch(B, [lockReport(key(500), "write", 1n)]), []);
  const pageBefore = [...server.keyIndex.after(null)];
  const before = snapshot(server);
  // 999 new keys, then (last) a conflict, a write seq too high, or a key reported twice.
  const good = Array.from({ length: 999 }, (_, i) => lockReport(key(1000 + i), "write", BigInt(i + 2)));
  const last: [RecoveredLock[], RegExp][] = [
    [
      [lockReport(key(500), "read")],
      /key "rb\/0500" is reported in mode read, which conflicts with write held by rid 0000000000002222/,
    ],
    [[lockReport(key(9999), "write", 5001n)], /key "rb\/9999" is above 5000/],
    [[lockReport(key(1000), "read")], /key "rb\/1000" is reported twice/],
  ];
  for (const [tail, pattern] of last) {
    assertProtocolError(server.onRecoverBatch(A, [...good, ...tail]), A, pattern);
    assert.equal(snapshot(server), before);
    assert.deepEqual([...server.keyIndex.after(null)], pageBefore);
    assert.deepEqual({ ...server.clientLoad(A) }, { entries: 0, requests: 0, invalidated: 0 });
    assert.equal(server.clientKeyListLength(A), 0);
    assert.equal(server.hasEntry(A, key(1000)), false);
  }
  // The same keys are then taken whole, and each is A's alone.
  assert.deepEqual(server.onRecoverBatch(A, good), []);
  assert.equal(server.keyCount, 1000);
  assert.equal(server.clientLoad(A).entries, 999);
  server.resumeAfterRecovery();
  assert.equal(server.keyIndex.size, 1000);
});

test("lock server - recovered locks share their entries between keys: a change on one key changes no other", () => {
  const server = newServer();
  server.holdForRecovery();
  const key = (i: number): Key => keyFromText(`sh/${i}`);
  const report = (mode: LockMode, ...keys: number[]): RecoveredLock[] =>
    keys.map((i) => lockReport(key(i), mode));
  // A: write on 1..4, read on 5..7; B: read on 5..7 (added to A's lists there) and null on 8.
  assert.deepEqual(server.onRecoverBatch(A, [...report("write", 1, 2, 3, 4), ...report("read", 5, 6, 7)]), []);
  assert.deepEqual(server.onRecoverBatch(B, [...report("read", 5, 6, 7), ...report("null", 8)]), []);
  const rows = (): string[] => server.dump().map((r) => `${r.key} ${r.rid === A ? "A" : r.rid === B ? "B" : "C"} ${r.mode} ${r.state}`);
  assert.deepEqual(server.resumeAfterRecovery(), []);
  // A response nobody asked for on a recovered key is refused and changes nothing.
  const untouched = snapshot(server);
  assertProtocolError(server.onInvalidateResponse(A, { key: key(1), oldMode: "write", newMode: "null" }), A, /unknown entry/);
  assert.equal(snapshot(server), untouched);
  assert.deepEqual(server.statsOf(key(1)), { key: key(1), requests: 0, invalidations: 0, responses: 0, grants: 0 });
  assert.equal(server.hasEntry(A, key(1)) && !server.hasEntry(B, key(1)), true);
  const on = (rid: Rid, id: number, i: number, mode: LockMode): string[] =>
    server.onRequest(rid, id, request(key(i), mode)).map((e) => `${e.type} ${e.rid === A ? "A" : e.rid === B ? "B" : "C"}`);
  // sh/2: A asked down to read, answers read (its entry there becomes a new one); C's read is granted.
  assert.deepEqual(on(C, 1, 2, "read"), ["invalidate A"]);
  assert.deepEqual(server.onInvalidateResponse(A, { key: key(2), oldMode: "write", newMode: "read" }).map((e) => e.type), ["grant"]);
  // sh/3: A asked down to null for C's write, answers; sh/6: both readers invalidated for C's write.
  assert.deepEqual(on(C, 2, 3, "write"), ["invalidate A"]);
  assert.deepEqual(server.onInvalidateResponse(A, { key: key(3), oldMode: "write", newMode: "null" }).map((e) => e.type), ["grant"]);
  assert.deepEqual(on(C, 3, 6, "write"), ["invalidate A", "invalidate B"]);
  // sh/4: A asks for read on its own write: its entry is invalidated to read first, then the grant replaces it.
  assert.deepEqual(on(A, 4, 4, "read"), ["invalidate A"]);
  assert.deepEqual(server.onInvalidateResponse(A, { key: key(4), oldMode: "write", newMode: "read" }).map((e) => `${e.type} ${e.rid === A}`), ["grant true"]);
  assert.deepEqual(rows(), [
    "sh/1 A write granted",
    "sh/2 A read granted",
    "sh/2 C read granted",
    "sh/3 C write granted",
    "sh/4 A read granted",
    "sh/5 A read granted",
    "sh/5 B read granted",
    "sh/6 C write requested",
    "sh/6 A read invalidated",
    "sh/6 B read invalidated",
    "sh/7 A read granted",
    "sh/7 B read granted",
    "sh/8 B null granted",
  ]);
  // B leaves: sh/5 and sh/7 keep A alone, sh/8 goes, sh/6 still waits for A.
  assert.deepEqual(server.onClientGone(B), []);
  assert.deepEqual(rows().filter((r) => !r.startsWith("sh/1 ") && !r.startsWith("sh/2 ") && !r.startsWith("sh/3 ") && !r.startsWith("sh/4 ")), [
    "sh/5 A read granted",
    "sh/6 C write requested",
    "sh/6 A read invalidated",
    "sh/7 A read granted",
  ]);
  // A leaves: C's write on sh/6 is granted; A's keys go, except those C holds.
  assert.deepEqual(server.onClientGone(A).map((e) => (e.type === "grant" ? `grant ${e.grant.key}` : e.type)), ["grant sh/6"]);
  assert.deepEqual(rows(), ["sh/2 C read granted", "sh/3 C write granted", "sh/6 C write granted"]);
  assert.equal(server.keyIndex.size, server.keyCount);
  assert.deepEqual([...server.keyIndex.after(null)], [key(2), key(3), key(6)]);
});

test("lock server - a departure from a large table: the same effects, in key order, and the index follows", () => {
  const server = newServer();
  const key = (i: number): Key => keyFromText(`big/${String(i).padStart(5, "0")}`);
  // A holds write on every third key of 0..2999 (and read on 1, 4, ... beside B); C waits on every 30th of A's.
  const expected: string[] = [];
  for (let i = 0; i < 3000; i++) {
    if (i % 3 === 0) {
      assert.equal(server.onRequest(A, i + 1, request(key(i), "write")).length, 1);
      if (i % 90 === 0) {
        assert.deepEqual(server.onRequest(C, i + 1, request(key(i), "read")).map((e) => e.type), ["invalidate"]);
        expected.push(`grant ${C} ${key(i)} read`);
      }
    } else if (i % 3 === 1) {
      assert.equal(server.onRequest(A, i + 1, request(key(i), "read")).length, 1);
      assert.equal(server.onRequest(B, i + 1, request(key(i), "read")).length, 1);
    } else assert.equal(server.onRequest(B, i + 1, request(key(i), "write")).length, 1);
  }
  assert.deepEqual(
    server.onClientGone(A).map((e) => (e.type === "grant" ? `grant ${e.rid} ${e.grant.key} ${e.grant.newMode}` : e.type)),
    expected,
  );
  assert.equal(server.keyCount, 2000 + expected.length);
  assert.equal(server.keyIndex.size, server.keyCount);
  const keys = [...server.keyIndex.after(null)];
  assert.deepEqual(keys, [...keys].sort(compareKeys));
  assert.equal(keys.filter((k) => server.hasEntry(A, k)).length, 0);
  assert.deepEqual(server.onClientGone(A), []);
});

test("lock server - recoveredWriteSeqMax is capped at WRITE_SEQ_MAX", () => {
  const server = new LockServer({ writeSeq: new WriteSeqCounter(), recoveredWriteSeqMax: 1n << 64n });
  server.holdForRecovery();
  assertProtocolError(
    server.onRecoverBatch(A, [lockReport(k1, "write", 1n << 62n)]),
    A,
    /is above 4611686018427387903/,
  );
});

test("lock server - binary keys sort bytewise and are shown in hex", () => {
  const server = newServer();
  const keys = [[0xff], [0x00, 0x00], [0x00], [0x7f, 0x01]].map((b) => keyFromBytes(new Uint8Array(b)));
  for (const [i, key] of keys.entries()) server.onRequest(A, i + 1, request(key, "read"));
  assert.deepEqual(
    server.dump().map((r) => keyToHex(r.key)),
    ["00", "0000", "7f01", "ff"],
  );
  assert.deepEqual(
    server.stats().map((s) => keyToHex(s.key)),
    ["00", "0000", "7f01", "ff"],
  );
  assertProtocolError(
    server.onInvalidateResponse(A, { key: keys[0]!, oldMode: "read", newMode: "null" }),
    A,
    /on key 0xff: unknown entry/,
  );
});

test("lock server - a write seq source that does not increase is a broken invariant", () => {
  const stuck: WriteSeqSource = { available: () => true, next: () => 5n, observe: () => undefined };
  const server = new LockServer({ writeSeq: stuck });
  server.onRequest(A, 1, request(k1, "write"));
  assert.throws(() => server.onRequest(A, 2, request(keyFromText("k2"), "write_only")), InvariantError);

  // observe() must raise the source above what recovery reported.
  const deaf: WriteSeqSource = { available: () => true, next: () => 3n, observe: () => undefined };
  const recovered = new LockServer({ writeSeq: deaf });
  recovered.holdForRecovery();
  recovered.onRecoverBatch(A, [lockReport(k1, "write", 10n)]);
  recovered.resumeAfterRecovery();
  assert.throws(() => recovered.onRequest(B, 1, request(keyFromText("k2"), "write")), /not above 10/);
});

test("lock server - WriteSeqCounter counts up and observe only raises", () => {
  const counter = new WriteSeqCounter(4n);
  assert.equal(counter.next(), 5n);
  counter.observe(3n);
  assert.equal(counter.next(), 6n);
  counter.observe(20n);
  assert.equal(counter.last, 20n);
  assert.equal(counter.next(), 21n);
});

test("lock server - hold and resume drive the recovering flag; resume without a hold is harmless", () => {
  const server = newServer();
  assert.equal(server.recovering, false);
  assert.deepEqual(server.resumeAfterRecovery(), []);
  server.holdForRecovery();
  server.holdForRecovery();
  assert.equal(server.recovering, true);
  assert.deepEqual(server.onRequest(A, 1, request(k1, "write")), []);
  assert.deepEqual(server.onClientGone(B), []);
  assert.equal(server.resumeAfterRecovery().length, 1);
  assert.equal(server.recovering, false);
});

test("lock server - a departure while held releases entries but grants nothing until resume", () => {
  const server = newServer();
  server.onRequest(A, 1, request(k1, "write"));
  server.onRequest(B, 1, request(k1, "write"));
  server.holdForRecovery();
  assert.deepEqual(server.onClientGone(A), []);
  assert.deepEqual(
    server.resumeAfterRecovery().map((e) => e.type),
    ["grant"],
  );
});

// ---------------------------------------------------------------------------------------------------
// Departures visit only the departing client's key list (stale and repeated keys allowed, compacted when
// it outgrows 2 × entries + 16): the effects are those of the table, whatever the client did before.

/** The effects with every invalidation of `rid` answered at once (and what the answers cause); the rest in order. */
function answering(server: LockServer, rid: Rid, effects: LockServerEffect[]): LockServerEffect[] {
  const rest: LockServerEffect[] = [];
  const queue = [...effects];
  for (let effect = queue.shift(); effect !== undefined; effect = queue.shift()) {
    if (effect.type === "invalidate" && effect.rid === rid) queue.push(...server.onInvalidateResponse(rid, effect.invalidation));
    else rest.push(effect);
  }
  return rest;
}

/** rid takes `key` for write and gives it back (a null request; its self-invalidation answered): the key is left stale on its list. */
function takeAndRelease(server: LockServer, rid: Rid, id: number, key: Key, mode: LockMode = "write"): void {
  assert.deepEqual(answering(server, rid, server.onRequest(rid, id, request(key, mode))).map((e) => e.type), ["grant"]);
  assert.deepEqual(answering(server, rid, server.onRequest(rid, id + 1, request(key, "null"))).map((e) => e.type), ["grant"]);
  assert.equal(server.hasEntry(rid, key), false);
}

const gk = (name: string): Key => keyFromText(`gone/${name}`);

/**
 * The table of the departure tests: A holds, queues, upgrades and is invalidated on k1..k7 beside B and
 * C. The same calls with the same request ids on any server give the same rows.
 */
function departureScript(server: LockServer): void {
  const on = (rid: Rid, id: number, key: string, mode: LockMode, noQueue = false): string[] =>
    server.onRequest(rid, id, request(gk(key), mode, noQueue)).map((e) => `${e.type} ${e.rid}`);
  assert.deepEqual(on(A, 101, "k1", "write"), [`grant ${A}`]);
  // k2: B holds write and is asked down to read for A's queued read.
  assert.deepEqual(on(B, 102, "k2", "write"), [`grant ${B}`]);
  assert.deepEqual(on(A, 103, "k2", "read"), [`invalidate ${B}`]);
  // k3: A holds write and has not answered the invalidation B's read caused.
  assert.deepEqual(on(A, 104, "k3", "write"), [`grant ${A}`]);
  assert.deepEqual(on(B, 105, "k3", "read"), [`invalidate ${A}`]);
  // k4: A upgrades its read (granted read + requested write) while C's read is being invalidated.
  assert.deepEqual(on(A, 106, "k4", "read"), [`grant ${A}`]);
  assert.deepEqual(on(C, 107, "k4", "read"), [`grant ${C}`]);
  assert.deepEqual(on(A, 108, "k4", "write"), [`invalidate ${C}`]);
  // k5: A holds write, invalidated for C's write; B's read queued behind that.
  assert.deepEqual(on(A, 109, "k5", "write"), [`grant ${A}`]);
  assert.deepEqual(on(C, 110, "k5", "write"), [`invalidate ${A}`]);
  assert.deepEqual(on(B, 111, "k5", "read"), []);
  // k6: A's upgrade granted after B answered; then C's read invalidates A down to read.
  assert.deepEqual(on(B, 112, "k6", "read"), [`grant ${B}`]);
  assert.deepEqual(on(A, 113, "k6", "read"), [`grant ${A}`]);
  assert.deepEqual(on(A, 114, "k6", "write"), [`invalidate ${B}`]);
  assert.deepEqual(
    server.onInvalidateResponse(B, { key: gk("k6"), oldMode: "read", newMode: "null" }).map((e) => `${e.type} ${e.rid}`),
    [`grant ${A}`],
  );
  assert.deepEqual(on(C, 115, "k6", "read"), [`invalidate ${A}`]);
  // k7: a trylock.
  assert.deepEqual(on(A, 116, "k7", "write_only", true), [`grant ${A}`]);
}

test("lock server - a departure after many releases and re-requests (stale and repeated keys) has the table's effects", () => {
  const churnSeq = new WriteSeqCounter();
  const churned = new LockServer({ writeSeq: churnSeq });
  let id = 1;
  // Before: A takes and gives back fresh keys and the script's own keys, many times over.
  for (let i = 0; i < 300; i++, id += 2) takeAndRelease(churned, A, id, gk(`fresh/${i}`));
  for (let round = 0; round < 20; round++) {
    for (const name of ["k1", "k2", "k3", "k4", "k5", "k6", "k7"]) {
      takeAndRelease(churned, A, id, gk(name), round % 2 === 0 ? "write" : "read");
      id += 2;
    }
  }
  departureScript(churned);
  // After: more churn on other keys, with A's entries in place (a compaction must keep them).
  for (let i = 0; i < 300; i++, id += 2) takeAndRelease(churned, A, id, gk(`late/${i}`), i % 3 === 0 ? "read" : "write_only");
  assert.equal(churned.clientLoad(A).entries, 8);
  assert.ok(churned.clientKeyListLength(A) <= 2 * 9 + 16, `A's key list is ${churned.clientKeyListLength(A)} long`);

  const freshSeq = new WriteSeqCounter();
  const fresh = new LockServer({ writeSeq: freshSeq });
  departureScript(fresh);
  freshSeq.observe(churnSeq.last);

  const rows = (server: LockServer): string[] =>
    server.dump().map((r) => `${keyToHex(r.key)} ${r.rid} ${r.mode} ${r.state} ${r.requestId}`);
  assert.deepEqual(rows(churned), rows(fresh));
  const effects = churned.onClientGone(A);
  const freshEffects = fresh.onClientGone(A);
  assert.deepEqual(rows(churned), rows(fresh));
  // In key order: k3 (B's read), k5 (C's write, then C asked down to read for B's read), k6 (C's read).
  // The same effects on both servers, but for the grant numbers: each server numbers its own non-null
  // grants, the script's 10 and, on the churned one, the 300 + 140 + 300 of the churn before them.
  const seq = churnSeq.last;
  const expected = (before: number): LockServerEffect[] => [
    {
      type: "grant",
      rid: B,
      requestId: 105,
      grant: {
        key: gk("k3"),
        oldMode: "null",
        newMode: "read",
        writeSeq: 0n,
        ...proof(B, gk("k3"), "read", before + 1),
      },
    },
    {
      type: "grant",
      rid: C,
      requestId: 110,
      grant: {
        key: gk("k5"),
        oldMode: "null",
        newMode: "write",
        writeSeq: seq,
        ...proof(C, gk("k5"), "write", before + 2),
      },
    },
    { type: "invalidate", rid: C, invalidation: { key: gk("k5"), oldMode: "write", newMode: "read" } },
    {
      type: "grant",
      rid: C,
      requestId: 115,
      grant: {
        key: gk("k6"),
        oldMode: "null",
        newMode: "read",
        writeSeq: 0n,
        ...proof(C, gk("k6"), "read", before + 3),
      },
    },
  ];
  assert.deepEqual(freshEffects, expected(10));
  assert.deepEqual(effects, expected(10 + 300 + 20 * 7 + 300));
  assert.equal(churned.dump().some((r) => r.rid === A), false);
  assert.deepEqual({ ...churned.clientLoad(A) }, { entries: 0, requests: 0, invalidated: 0 });
  assert.equal(churned.clientKeyListLength(A), 0);
  assert.deepEqual(churned.onClientGone(A), []);
});

test("lock server - a client's key list stays bounded: 100,000 fresh keys taken and released, one hot key re-requested", () => {
  const server = newServer();
  // A keeps three entries throughout: a write, a read shared with B, and a request queued behind B.
  assert.equal(server.onRequest(A, 1, request(gk("held/1"), "write")).length, 1);
  assert.equal(server.onRequest(B, 2, request(gk("held/2"), "read")).length, 1);
  assert.equal(server.onRequest(A, 3, request(gk("held/2"), "read")).length, 1);
  assert.equal(server.onRequest(B, 4, request(gk("held/3"), "write_only")).length, 1);
  assert.equal(server.onRequest(A, 5, request(gk("held/3"), "write")).length, 1); // invalidates B
  assert.equal(server.clientLoad(A).entries, 3);
  // At most two entries more during a cycle (the grant and the null request): 2 × 5 + 16.
  const bound = 2 * 5 + 16;
  let id = 10;
  let longest = 0;
  for (let i = 0; i < 100_000; i++, id += 2) {
    takeAndRelease(server, A, id, gk(`fresh/${i}`));
    longest = Math.max(longest, server.clientKeyListLength(A));
  }
  assert.ok(longest <= bound, `A's key list reached ${longest}`);
  const hot = gk("hot");
  for (let i = 0; i < 100_000; i++, id += 2) {
    takeAndRelease(server, A, id, hot, i % 2 === 0 ? "read" : "write");
    longest = Math.max(longest, server.clientKeyListLength(A));
  }
  assert.ok(longest <= bound, `A's key list reached ${longest}`);
  // Re-requesting a key A holds (an upgrade, a repeat, a downgrade through its own invalidation): bounded too.
  for (let i = 0; i < 10_000; i++, id++) {
    answering(server, A, server.onRequest(A, id, request(gk("held/1"), i % 2 === 0 ? "read" : "write")));
    longest = Math.max(longest, server.clientKeyListLength(A));
  }
  assert.ok(longest <= bound, `A's key list reached ${longest}`);
  assert.equal(server.clientLoad(A).entries, 3);
  assert.equal(server.keyCount, 3);
  // The list still has every key A is on: its departure releases all three and B gets its write_only.
  assert.deepEqual(server.onClientGone(A), []); // B's invalidation on held/3 is still outstanding
  assert.deepEqual(server.dump().map((r) => `${r.rid} ${r.state}`), [`${B} granted`, `${B} invalidated`]);
  assert.deepEqual(
    server.onInvalidateResponse(B, { key: gk("held/3"), oldMode: "write_only", newMode: "null" }),
    [],
  );
  assert.equal(server.keyCount, 1);
});

test("lock server - a recovered client's departure during the hold: its locks and queued requests go, nothing is granted before resume", () => {
  const server = newServer();
  server.holdForRecovery();
  const locks: RecoveredLock[] = [];
  for (let i = 0; i < 2500; i++)
    locks.push(lockReport(gk(`rec/${String(i).padStart(5, "0")}`), i % 3 === 0 ? "null" : "read", BigInt(i)));
  // A resent request first (queued), then its report in batches; B shares the reads and queues a write.
  assert.deepEqual(server.onRequest(A, 1, request(gk("rec/00001"), "write")), []);
  for (let at = 0; at < locks.length; at += 1000) assert.deepEqual(server.onRecoverBatch(A, locks.slice(at, at + 1000)), []);
  assert.deepEqual(server.onRecoverBatch(B, [lockReport(gk("rec/00002"), "read")]), []);
  assert.deepEqual(server.onRequest(B, 1, request(gk("rec/00002"), "write")), []);
  assert.deepEqual(server.onRequest(C, 1, request(gk("rec/00001"), "read")), []);
  assert.equal(server.clientLoad(A).entries, 2501);
  assert.ok(server.clientKeyListLength(A) <= 2 * 2501 + 16);
  assert.deepEqual(server.onClientGone(A), []);
  assert.deepEqual(server.onClientGone(A), []);
  assert.equal(server.dump().some((r) => r.rid === A), false);
  assert.equal(server.keyCount, 2);
  assert.equal(server.entryCount, 3);
  assert.deepEqual(
    server.resumeAfterRecovery().map((e) => (e.type === "grant" ? `${e.rid} ${keyToHex(e.grant.key)} ${e.grant.newMode}` : e.type)),
    [`${C} ${keyToHex(gk("rec/00001"))} read`, `${B} ${keyToHex(gk("rec/00002"))} write`],
  );
});

test("lock server - a departure with a granted and a requested entry on one key (an upgrade) removes both", () => {
  const server = newServer();
  const key = gk("upgrade");
  assert.equal(server.onRequest(A, 1, request(key, "read")).length, 1);
  assert.equal(server.onRequest(B, 1, request(key, "read")).length, 1);
  assert.deepEqual(server.onRequest(A, 2, request(key, "write")).map((e) => `${e.type} ${e.rid}`), [`invalidate ${B}`]);
  assert.deepEqual(server.onRequest(C, 1, request(key, "read")), []);
  assert.deepEqual({ ...server.clientLoad(A) }, { entries: 2, requests: 1, invalidated: 0 });
  // B's invalidation is outstanding: nothing is granted until it answers, A gone or not.
  assert.deepEqual(server.onClientGone(A), []);
  assert.deepEqual(server.dump().map((r) => `${r.rid} ${r.mode} ${r.state}`), [`${C} read requested`, `${B} read invalidated`]);
  assert.deepEqual(
    server.onInvalidateResponse(B, { key, oldMode: "read", newMode: "null" }).map((e) => `${e.type} ${e.rid}`),
    [`grant ${C}`],
  );
  // Without an outstanding invalidation, the departure grants at once: A's upgrade was the head.
  assert.equal(server.onRequest(A, 3, request(key, "read")).length, 1);
  assert.deepEqual(server.onRequest(A, 4, request(key, "write")).map((e) => `${e.type} ${e.rid}`), [`invalidate ${C}`]);
  assert.deepEqual(server.onInvalidateResponse(C, { key, oldMode: "read", newMode: "null" }).map((e) => e.type), ["grant"]);
  assert.deepEqual(server.onRequest(B, 2, request(key, "read")).map((e) => `${e.type} ${e.rid}`), [`invalidate ${A}`]);
  assert.deepEqual(server.onClientGone(A).map((e) => `${e.type} ${e.rid}`), [`grant ${B}`]);
  assert.deepEqual(server.dump().map((r) => `${r.rid} ${r.mode} ${r.state}`), [`${B} read granted`]);
});

// ---------------------------------------------------------------------------------------------------
// Randomized: 3 clients × 3 keys; requests (some nonblock, a few duplicates), invalidation responses
// (answered at random later steps, sometimes with a lower mode than asked), bogus responses, departures
// and server failovers (recovery from what the clients hold, resent requests). Invariants after every step.


const RIDS: readonly Rid[] = [0xa1n, 0xb2n, 0xc3n];

function* iterate<T>(iterator: Iterator<T>): Generator<T> {
  for (let next = iterator.next(); next.done !== true; next = iterator.next()) yield next.value;
}
const KEYS: readonly Key[] = ["a", "b", "c"].map(keyFromText);

interface Outstanding {
  rid: Rid;
  key: Key;
  oldMode: LockMode;
  newMode: LockMode;
}

/** A counter with a budget of tokens (null = no limit): a reserved block that runs out while the store is away. */
class BudgetedWriteSeq implements WriteSeqSource {
  budget: bigint | null = null;
  constructor(readonly counter: WriteSeqCounter) {}
  available(): boolean {
    return this.budget === null || this.budget > 0n;
  }
  next(): bigint {
    assert.ok(this.available(), "next() was called while no write seq was available");
    if (this.budget !== null) this.budget -= 1n;
    return this.counter.next();
  }
  observe(seen: bigint): void {
    this.counter.observe(seen);
  }
}

/** The grant tags of the randomized runs' servers (each failover's server has the next term). */
const RUN_TAGS = new GrantTags(Uint8Array.from({ length: 16 }, (_, i) => 0xa0 + i));

type GrantProof = Pick<LockGrant, "grantTerm" | "grantNo" | "grantTag">;

class RandomRun {
  readonly #random: () => number;
  #writeSeq = new BudgetedWriteSeq(new WriteSeqCounter());
  #term = 1n;
  server = new LockServer({ writeSeq: this.#writeSeq, tags: RUN_TAGS, term: this.#term });
  /** Non-null grants of the current server so far. */
  #grantCount = 0;
  #outstanding: Outstanding[] = [];
  #requestIds = new Map<Rid, number>();
  /** The write seq of each (rid, key) grant a client holds, reported again in recovery. */
  #heldSeq = new Map<string, bigint>();
  /** The proof of each (rid, key) non-null grant a client holds, reported again in recovery. */
  #heldProof = new Map<string, GrantProof>();
  #lastWriteSeq = 0n;
  log: string[] = [];

  constructor(seed: number) {
    this.#random = prng(seed);
  }

  #pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.#random() * items.length)]!;
  }

  #chance(p: number): boolean {
    return this.#random() < p;
  }

  #shuffled<T>(items: readonly T[]): T[] {
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(this.#random() * (i + 1));
      [out[i], out[j]] = [out[j]!, out[i]!];
    }
    return out;
  }

  #nextRequestId(rid: Rid): number {
    const id = (this.#requestIds.get(rid) ?? 0) + 1;
    this.#requestIds.set(rid, id);
    return id;
  }

  step(): void {
    const roll = this.#random();
    if (roll < 0.5) this.#request();
    else if (roll < 0.82) this.#respond();
    else if (roll < 0.86) this.#bogusResponse();
    else if (roll < 0.92) this.#gone();
    else if (roll < 0.96) this.#seqs();
    else this.#failover();
    this.checkTable();
  }

  #request(): void {
    const rows = this.server.dump();
    const queued = (rid: Rid, key: Key) =>
      rows.some((r) => r.rid === rid && r.key === key && r.state === "requested");
    const rid = this.#pick(RIDS);
    const key = this.#pick(KEYS);
    const mode = this.#pick(LOCK_MODES);
    const noQueue = this.#chance(0.2);
    const duplicate = queued(rid, key);
    if (duplicate && !this.#chance(0.1)) return;
    const id = this.#nextRequestId(rid);
    this.log.push(`request ${rid} ${key} ${mode}${noQueue ? " nonblock" : ""} id=${id}`);
    const before = snapshot(this.server);
    const expected = noQueue && !duplicate ? this.#noQueueAnswer(rows, rid, key, mode) : undefined;
    const effects = this.server.onRequest(rid, id, request(key, mode, noQueue));
    if (duplicate) {
      assertProtocolError(effects, rid, /already has a request queued/);
      assert.equal(snapshot(this.server), before, "a duplicate request changed the table");
      return;
    }
    if (expected !== undefined) {
      assert.equal(effects.length, 1, "a nonblock request has exactly one answer");
      assert.equal(effects[0]!.type, expected, "nonblock answer differs from the model");
      assert.equal(effects[0]!.rid, rid, "a nonblock request affected another client");
    }
    this.#applyEffects(effects, rows, { kind: "request", rid, key });
  }

  /**
   * An independent statement of DESIGN §4's nonblock rule, checked against the server's answer: refused
   * while recovering, behind anything queued or invalidated, or when another client's grant conflicts;
   * else granted, unless the requester's own non-null grant conflicts, which is invalidated first.
   */
  #noQueueAnswer(
    rows: ReturnType<LockServer["dump"]>,
    rid: Rid,
    key: Key,
    mode: LockMode,
  ): "grant" | "invalidate" | "refuse" {
    if (this.server.recovering) return "refuse";
    if (carriesWriteSeq(mode) && !this.#writeSeq.available()) return "refuse";
    const onKey = rows.filter((r) => r.key === key);
    if (onKey.some((r) => r.state !== "granted")) return "refuse";
    if (onKey.some((r) => r.rid !== rid && !compatible(r.mode, mode, false))) return "refuse";
    const own = onKey.find((r) => r.rid === rid);
    return own === undefined || own.mode === "null" || compatible(own.mode, mode, true)
      ? "grant"
      : "invalidate";
  }

  #respond(): void {
    if (this.#outstanding.length === 0) return;
    const index = Math.floor(this.#random() * this.#outstanding.length);
    const inv = this.#outstanding[index]!;
    this.#outstanding.splice(index, 1);
    // Going further down than asked (write→null when asked for read) is allowed.
    const newMode = inv.newMode === "read" && this.#chance(0.2) ? "null" : inv.newMode;
    this.log.push(`respond ${inv.rid} ${inv.key} ${inv.oldMode}->${newMode}`);
    const rows = this.server.dump();
    const effects = this.server.onInvalidateResponse(inv.rid, {
      key: inv.key,
      oldMode: inv.oldMode,
      newMode,
    });
    if (newMode === "null") {
      this.#heldSeq.delete(`${inv.rid} ${inv.key}`);
      this.#heldProof.delete(`${inv.rid} ${inv.key}`);
    }
    this.#applyEffects(effects, rows, { kind: "respond", rid: inv.rid, key: inv.key });
  }

  #bogusResponse(): void {
    const rid = this.#pick(RIDS);
    const key = this.#pick(KEYS);
    if (this.#outstanding.some((o) => o.rid === rid && o.key === key)) return;
    this.log.push(`bogus respond ${rid} ${key}`);
    const before = snapshot(this.server);
    const effects = this.server.onInvalidateResponse(rid, { key, oldMode: "read", newMode: "null" });
    assertProtocolError(effects, rid, /unknown (lock|entry)/);
    assert.equal(snapshot(this.server), before, "a bogus response changed the table");
  }

  #gone(): void {
    const rid = this.#pick(RIDS);
    this.log.push(`gone ${rid}`);
    this.#outstanding = this.#outstanding.filter((o) => o.rid !== rid);
    for (const key of KEYS) {
      this.#heldSeq.delete(`${rid} ${key}`);
      this.#heldProof.delete(`${rid} ${key}`);
    }
    const rows = this.server.dump();
    this.#applyEffects(this.server.onClientGone(rid), rows, { kind: "gone", rid });
    assert.ok(!this.server.dump().some((r) => r.rid === rid), "entries of a departed client remain");
    const before = snapshot(this.server);
    assert.deepEqual(this.server.onClientGone(rid), [], "a second departure produced effects");
    assert.equal(snapshot(this.server), before, "a second departure changed the table");
  }

  /** The write seq source runs dry (a reservation is pending) or gets tokens again (it landed). */
  #seqs(): void {
    const roll = this.#random();
    const budget = roll < 0.3 ? 0n : roll < 0.7 ? BigInt(1 + Math.floor(this.#random() * 3)) : null;
    this.#writeSeq.budget = budget;
    this.log.push(`seqs ${budget ?? "all"}`);
    const rows = this.server.dump();
    this.#applyEffects(this.server.onWriteSeqsAvailable(), rows, { kind: "seqs" });
  }

  /**
   * A new server, of the next term: clients report what they hold (the pre-invalidation mode, B7, with
   * the proof of their latest grant) and resend queued requests.
   */
  #failover(): void {
    this.log.push("failover");
    const old = this.server.dump();
    // The seq high-water mark persists across servers (DESIGN §4); recovery may only raise it.
    const budget = this.#writeSeq.budget;
    this.#writeSeq = new BudgetedWriteSeq(new WriteSeqCounter(this.#writeSeq.counter.last));
    this.#writeSeq.budget = budget;
    this.#term += 1n;
    this.#grantCount = 0;
    this.server = new LockServer({ writeSeq: this.#writeSeq, tags: RUN_TAGS, term: this.#term });
    this.server.holdForRecovery();
    this.#outstanding = []; // invalidations sent by the dead server vanish (reference §6.13)
    for (const rid of this.#shuffled(RIDS)) {
      const held: RecoveredLock[] = old
        .filter((r) => r.rid === rid && r.state !== "requested")
        .map((r) => this.#report(rid, r.key, r.mode));
      while (held.length > 0) {
        const batch = held.splice(0, 1 + Math.floor(this.#random() * 2));
        assert.deepEqual(
          this.server.onRecoverBatch(rid, batch),
          [],
          "a consistent recovery batch was refused",
        );
      }
    }
    for (const r of this.#shuffled(old.filter((r) => r.state === "requested"))) {
      assert.deepEqual(
        this.server.onRequest(r.rid, r.requestId, request(r.key, r.mode)),
        [],
        "something happened during the hold",
      );
    }
    assert.equal(this.server.entryCount, old.length);
    const beforeResume = this.server.dump();
    this.#applyEffects(this.server.resumeAfterRecovery(), beforeResume, { kind: "resume" });
  }

  /** What `rid` reports of its `mode` on `key` in recovery: with its latest grant's proof, which covers it. */
  #report(rid: Rid, key: Key, mode: LockMode): RecoveredLock {
    const writeSeq = this.#heldSeq.get(`${rid} ${key}`) ?? 0n;
    if (mode === "null") return { key, mode, writeSeq, grantTerm: 0n, grantNo: 0, grantTag: 0 };
    const held = this.#heldProof.get(`${rid} ${key}`);
    assert.ok(held !== undefined, `no grant proof for ${mode} held by ${rid} on ${key}`);
    const report = { key, mode, writeSeq, ...held };
    assert.ok(RUN_TAGS.verify(rid, report), `${rid}'s ${mode} on ${key} is not covered by its grant's tag`);
    return report;
  }

  /** Checks one handler's effects against the table as it was before the handler ran. */
  #applyEffects(
    effects: LockServerEffect[],
    before: ReturnType<LockServer["dump"]>,
    cause:
      | { kind: "request"; rid: Rid; key: Key }
      | { kind: "respond"; rid: Rid; key: Key }
      | { kind: "gone"; rid: Rid }
      | { kind: "resume" }
      | { kind: "seqs" },
  ): void {
    const invalidatedKeys = new Set<Key>();
    for (const effect of effects) {
      this.log.push(
        `  ${effect.type} ${effect.rid} ${"grant" in effect ? `${effect.grant.key} ${effect.grant.oldMode}->${effect.grant.newMode} ${effect.grant.writeSeq}` : ""}${"invalidation" in effect ? `${effect.invalidation.key} ${effect.invalidation.oldMode}->${effect.invalidation.newMode}` : ""}`,
      );
      assert.notEqual(
        effect.type,
        "protocol-error",
        `unexpected protocol error: ${effect.type === "protocol-error" ? effect.error.message : ""}`,
      );
      if (effect.type === "invalidate") {
        invalidatedKeys.add(effect.invalidation.key);
        this.#outstanding.push({ rid: effect.rid, ...effect.invalidation });
      }
      if (effect.type !== "grant") continue;
      const { key, newMode, writeSeq } = effect.grant;
      // No grant while invalidations are outstanding: none sent earlier in this batch, and every one
      // outstanding before the handler must have been resolved by it.
      assert.ok(!invalidatedKeys.has(key), "grant after an invalidation on the same key in one batch");
      const pending = before.filter((r) => r.key === key && r.state === "invalidated").map((r) => r.rid);
      const resolvedBy = cause.kind === "respond" || cause.kind === "gone" ? cause.rid : undefined;
      assert.ok(
        pending.every((rid) => rid === resolvedBy) &&
          (cause.kind !== "respond" || cause.key === key || pending.length === 0),
        "grant while another invalidation was outstanding",
      );
      const { grantTerm, grantNo, grantTag } = effect.grant;
      if (newMode === "null") {
        assert.deepEqual([grantTerm, grantNo, grantTag], [0n, 0, 0], "a null grant carries a proof");
        this.#heldProof.delete(`${effect.rid} ${key}`);
      } else {
        const expected = RUN_TAGS.tag(effect.rid, key, newMode, this.#term, ++this.#grantCount);
        assert.deepEqual(
          [grantTerm, grantNo, grantTag],
          [this.#term, this.#grantCount, expected],
          "grant proof",
        );
        this.#heldProof.set(`${effect.rid} ${key}`, { grantTerm, grantNo, grantTag });
      }
      if (carriesWriteSeq(newMode)) {
        assert.ok(writeSeq > this.#lastWriteSeq, `write seq ${writeSeq} not above ${this.#lastWriteSeq}`);
        this.#lastWriteSeq = writeSeq;
        this.#heldSeq.set(`${effect.rid} ${key}`, writeSeq);
      } else {
        assert.equal(writeSeq, 0n, `${newMode} grant carries a write seq`);
        this.#heldSeq.delete(`${effect.rid} ${key}`);
      }
    }
  }

  /** Reference §3.11 on the table as it is now. */
  checkTable(): void {
    const rows = this.server.dump();
    assert.equal(this.server.entryCount, rows.length, "entryCount disagrees with dump");
    assert.equal(
      this.server.keyCount,
      new Set(rows.map((r) => r.key)).size,
      "keyCount disagrees with dump (an empty key was kept?)",
    );
    // The ordered index holds exactly the keys with state, in key order; per-client counters are exact.
    const keys = [...new Set(rows.map((r) => r.key))];
    assert.deepEqual(keys, [...keys].sort(compareKeys), "dump is not in key order");
    assert.equal(this.server.keyIndex.size, this.server.keyCount, "the key index and the table disagree");
    for (const after of [null, ...KEYS]) {
      const expected = keys.filter((k) => after === null || k > after);
      assert.deepEqual([...iterate(this.server.keysAfter(after))], expected, `keysAfter(${after})`);
    }
    for (const rid of RIDS) {
      const mine = rows.filter((r) => r.rid === rid);
      assert.ok(
        this.server.clientKeyListLength(rid) >= new Set(mine.map((r) => r.key)).size,
        `client ${rid}'s key list is shorter than its keys`,
      );
      assert.deepEqual(
        { ...this.server.clientLoad(rid) },
        {
          entries: mine.length,
          requests: mine.filter((r) => r.state === "requested").length,
          invalidated: mine.filter((r) => r.state === "invalidated").length,
        },
        `client ${rid}'s counters`,
      );
    }
    for (const key of KEYS) {
      const onKey = rows.filter((r) => r.key === key);
      const held = onKey.filter((r) => r.state !== "requested");
      const queued = onKey.filter((r) => r.state === "requested");
      // What clients may actually hold (granted, or invalidated and not yet answered) is pairwise compatible.
      for (const x of held) {
        for (const y of held) {
          if (x.rid !== y.rid)
            assert.ok(
              compatible(x.mode, y.mode, false),
              `${x.mode} on ${x.rid} and ${y.mode} on ${y.rid} held at once`,
            );
        }
      }
      assert.equal(
        new Set(held.map((r) => r.rid)).size,
        held.length,
        "two held entries of one client on one key",
      );
      assert.equal(
        new Set(queued.map((r) => r.rid)).size,
        queued.length,
        "two queued requests of one client on one key",
      );
      // A null entry stays on granted only when recovery put it there.
      for (const r of held)
        if (r.mode === "null" && r.state === "granted")
          assert.equal(r.requestId, 0, "a granted null entry outlived its grant");
      // Every invalidated entry is exactly one outstanding invalidation, and vice versa.
      const invalidated = onKey
        .filter((r) => r.state === "invalidated")
        .map((r) => `${r.rid}`)
        .sort();
      const outstanding = this.#outstanding
        .filter((o) => o.key === key)
        .map((o) => `${o.rid}`)
        .sort();
      assert.deepEqual(
        invalidated,
        outstanding,
        "invalidated entries and outstanding invalidations disagree",
      );
      // Never a grantable request left unprocessed; only a write-mode head may wait, for a token.
      if (!this.server.recovering && invalidated.length === 0 && queued.length > 0) {
        assert.ok(
          carriesWriteSeq(queued[0]!.mode) && !this.#writeSeq.available(),
          "requests queued with nothing outstanding",
        );
      }
    }
  }

  /** Answer everything outstanding; then every queued request must have been granted (liveness). */
  drain(): void {
    this.#writeSeq.budget = null;
    const rows = this.server.dump();
    this.#applyEffects(this.server.onWriteSeqsAvailable(), rows, { kind: "seqs" });
    while (this.#outstanding.length > 0) this.#respond();
    this.checkTable();
    assert.ok(
      !this.server.dump().some((r) => r.state === "requested"),
      "requests still queued after every invalidation was answered",
    );
  }

  leaveAll(): void {
    for (const rid of this.#shuffled(RIDS)) {
      const rows = this.server.dump();
      this.#outstanding = this.#outstanding.filter((o) => o.rid !== rid);
      this.#applyEffects(this.server.onClientGone(rid), rows, { kind: "gone", rid });
      this.checkTable();
    }
  }
}

test("lock server - randomized requests, responses, departures and failovers keep the §3.11 invariants", () => {
  const envSeed = process.env.KEYLOCK_SEED;
  const baseSeed = envSeed !== undefined ? Number(envSeed) >>> 0 : Math.floor(Math.random() * 2 ** 32);
  console.log(`lock-server randomized: KEYLOCK_SEED=${baseSeed}`);
  const rounds = 40;
  const steps = 300;
  for (let round = 0; round < rounds; round++) {
    const seed = (baseSeed + round) >>> 0;
    const run = new RandomRun(seed);
    try {
      for (let i = 0; i < steps; i++) run.step();
      run.drain();
      run.leaveAll();
      assert.equal(run.server.keyCount, 0, "keys left after everyone left");
      assert.equal(run.server.entryCount, 0, "entries left after everyone left");
    } catch (error) {
      console.log(
        `failed in round ${round} (KEYLOCK_SEED=${baseSeed}); last steps:\n${run.log.slice(-30).join("\n")}`,
      );
      throw error;
    }
  }
});
