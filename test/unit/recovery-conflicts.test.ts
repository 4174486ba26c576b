// Conflicting recovery reports (src/core/lock-server.ts onRecoverBatch; known finding F1, DESIGN §9):
// grant proofs decide, whoever reports first. A first server hands out real grants; a second, sharing the
// grant-tag key as members do through the store, recovers from reports built out of them, true or not.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ProtocolError } from "../../src/core/errors.js";
import { GrantTags } from "../../src/core/grant-tags.js";
import { keyFromText, type Key } from "../../src/core/keys.js";
import type { LockGrant, RecoveredLock, Rid } from "../../src/core/lock-messages.js";
import { LockServer, WriteSeqCounter, type LockServerEffect } from "../../src/core/lock-server.js";
import type { LockMode } from "../../src/core/modes.js";

const HONEST = 0x1111n;
const LIAR = 0x2222n;
const OTHER = 0x3333n;
const k1 = keyFromText("k1");
const k2 = keyFromText("k2");
const k3 = keyFromText("k3");
const TAG_KEY = Uint8Array.from({ length: 16 }, (_, i) => 0xa0 + i);

function server(term: bigint): LockServer {
  return new LockServer({ writeSeq: new WriteSeqCounter(), tags: new GrantTags(TAG_KEY), term });
}

/** The dead server of term 1, driven through a history; its grants are the clients' proofs. */
class History {
  readonly locks = server(1n);
  #id = 0;

  /** `rid` asks for `mode` on `key`; every holder in the way answers its invalidation at once. Returns the grant. */
  take(rid: Rid, key: Key, mode: LockMode): LockGrant {
    const effects: LockServerEffect[] = this.locks.onRequest(rid, ++this.#id, {
      key,
      oldMode: "null",
      newMode: mode,
      noQueue: false,
    });
    for (let i = 0; i < effects.length; i++) {
      const effect = effects[i]!;
      if (effect.type === "grant" && effect.rid === rid) return effect.grant;
      if (effect.type === "invalidate")
        effects.push(...this.locks.onInvalidateResponse(effect.rid, effect.invalidation));
    }
    assert.fail(`no grant of ${mode} on ${key} to ${rid}`);
  }
}

/** What a client reports of a grant it holds (in `mode`, the grant's or a downgrade). */
function report(grant: LockGrant, mode: LockMode = grant.newMode): RecoveredLock {
  return {
    key: grant.key,
    mode,
    writeSeq: grant.writeSeq,
    grantTerm: grant.grantTerm,
    grantNo: grant.grantNo,
    grantTag: grant.grantTag,
  };
}

function recovering(): LockServer {
  const next = server(2n);
  next.holdForRecovery();
  return next;
}

function holders(locks: LockServer, key: Key): string[] {
  return locks.entriesOf(key).map((e) => `${e.rid.toString(16)} ${e.mode} ${e.state}`);
}

function refuted(effects: LockServerEffect[]): { rid: Rid; key: Key; message: string }[] {
  return effects.flatMap((e) =>
    e.type === "refuted" ? [{ rid: e.rid, key: e.key, message: e.error.message }] : [],
  );
}

test("recovery conflicts - F1: a stale report that came first is refuted, and the honest one is recovered", () => {
  const history = new History();
  const stale = history.take(LIAR, k1, "read"); // the liar really held k1 once...
  const current = history.take(HONEST, k1, "write"); // ...until the honest client's write took it
  const next = recovering();
  assert.deepEqual(next.onRecoverBatch(LIAR, [report(stale)]), [], "a lone report is taken as it comes");
  const effects = next.onRecoverBatch(HONEST, [report(current)]);
  assert.equal(effects.length, 1, "no refusal of the honest batch");
  const [only] = refuted(effects);
  assert.equal(only?.rid, LIAR);
  assert.equal(only?.key, k1);
  assert.match(
    only.message,
    /recovery report of key "k1" in mode read refuted: rid 0*1111 proved a later grant/,
  );
  assert.ok(effects[0]!.type === "refuted" && effects[0]!.error instanceof ProtocolError);
  assert.deepEqual(holders(next, k1), ["1111 write granted"]);
  assert.equal(next.entryCount, 1);
  assert.equal(next.clientLoad(LIAR).entries, 0);
  next.resumeAfterRecovery();
  assert.deepEqual(
    next.dump().map((e) => e.rid),
    [HONEST],
  );
});

test("recovery conflicts - a forged report that came first is refuted (the liar never held the key)", () => {
  const history = new History();
  const current = history.take(HONEST, k1, "write");
  const next = recovering();
  const forged: RecoveredLock = {
    key: k1,
    mode: "write",
    writeSeq: 0n,
    grantTerm: 1n,
    grantNo: 99,
    grantTag: 12345,
  };
  assert.deepEqual(next.onRecoverBatch(LIAR, [forged]), []);
  const effects = next.onRecoverBatch(HONEST, [report(current)]);
  assert.deepEqual(
    refuted(effects).map((r) => r.rid),
    [LIAR],
  );
  assert.deepEqual(holders(next, k1), ["1111 write granted"]);
});

test("recovery conflicts - another client's real proof under the liar's rid does not verify", () => {
  const history = new History();
  const current = history.take(HONEST, k1, "write");
  const next = recovering();
  // A copy of the honest grant's proof (seen on the wire without TLS), claimed by the liar first.
  assert.deepEqual(next.onRecoverBatch(LIAR, [report(current)]), []);
  assert.deepEqual(
    refuted(next.onRecoverBatch(HONEST, [report(current)])).map((r) => r.rid),
    [LIAR],
  );
  assert.deepEqual(holders(next, k1), ["1111 write granted"]);
});

test("recovery conflicts - when the honest report came first, the liar's batch is refused whole", () => {
  const history = new History();
  const stale = history.take(LIAR, k2, "write");
  const current = history.take(HONEST, k2, "write");
  const own = history.take(LIAR, k3, "read");
  const next = recovering();
  assert.deepEqual(next.onRecoverBatch(HONEST, [report(current)]), []);
  const forged: RecoveredLock = {
    ...report(current),
    grantTag: report(current).grantTag + (report(current).grantTag > 0 ? -1 : 1),
  };
  for (const [lie, why] of [
    [
      report(stale),
      /conflicts with write held by rid 0*1111: that client's grant \(term 1, grant 2\) is not earlier than this report's \(term 1, grant 1\)/,
    ],
    [forged, /conflicts with write held by rid 0*1111: this report's grant proof does not verify/],
  ] as const) {
    const effects = next.onRecoverBatch(LIAR, [lie, report(own)]);
    assert.equal(effects.length, 1);
    assert.equal(effects[0]!.type, "protocol-error");
    assert.match(effects[0]!.type === "protocol-error" ? effects[0]!.error.message : "", why);
    assert.deepEqual(holders(next, k2), ["1111 write granted"]);
    assert.deepEqual(holders(next, k3), [], "nothing of the refused batch is recovered");
  }
});

test("recovery conflicts - two reports without a valid proof: the first stands, as before proofs", () => {
  const next = recovering();
  const bogus = (grantTag: number): RecoveredLock => ({
    key: k1,
    mode: "write",
    writeSeq: 0n,
    grantTerm: 1n,
    grantNo: 1,
    grantTag,
  });
  assert.deepEqual(next.onRecoverBatch(OTHER, [bogus(1)]), []);
  const effects = next.onRecoverBatch(LIAR, [bogus(2)]);
  assert.equal(effects.length, 1);
  assert.equal(effects[0]!.type, "protocol-error");
  assert.deepEqual(holders(next, k1), ["3333 write granted"]);
});

test("recovery conflicts - a read downgraded from write is proven by its write grant, and a proof from an older term loses to a newer one", () => {
  const history = new History();
  const write = history.take(LIAR, k1, "write");
  // The next term (2) granted the key to the honest client after recovering from term 1.
  const term2 = server(2n);
  const current = (() => {
    const id = 1;
    const effects = term2.onRequest(HONEST, id, {
      key: k1,
      oldMode: "null",
      newMode: "read",
      noQueue: false,
    });
    const grant = effects.find((e) => e.type === "grant");
    assert.ok(grant?.type === "grant");
    return grant.grant;
  })();
  assert.equal(current.grantTerm, 2n);
  assert.equal(current.grantNo, 1, "a smaller grant number than the liar's, in a later term");
  const next = server(3n);
  next.holdForRecovery();
  // The liar reports its old write as a read (as if an invalidation had lowered it): the proof verifies...
  assert.deepEqual(next.onRecoverBatch(LIAR, [report(write, "read")]), []);
  // ...and stands beside a compatible reader; a writer from a later term refutes it.
  assert.deepEqual(
    next.onRecoverBatch(OTHER, [
      { ...report(current), grantTag: 0, grantTerm: 0n, grantNo: 0, mode: "null" },
    ]),
    [],
  );
  const effects = next.onRecoverBatch(HONEST, [{ ...report(current), mode: "read" }]);
  assert.deepEqual(effects, [], "two readers do not conflict");
  const third = server(3n);
  third.holdForRecovery();
  assert.deepEqual(third.onRecoverBatch(LIAR, [report(write)]), []);
  const upgraded = history.take(OTHER, k2, "write"); // unrelated
  assert.deepEqual(third.onRecoverBatch(OTHER, [report(upgraded)]), []);
  assert.deepEqual(
    refuted(third.onRecoverBatch(HONEST, [report(current)])).map((r) => r.rid),
    [LIAR],
  );
  assert.deepEqual(holders(third, k1), ["1111 read granted"]);
  assert.deepEqual(
    holders(third, k2),
    ["3333 write granted"],
    "the liar's refutation touches only the key it lied about",
  );
});

test("recovery conflicts - a claim upgraded beyond its grant does not verify (a read grant claimed as write)", () => {
  const history = new History();
  const read = history.take(LIAR, k1, "read");
  const honestRead = history.take(HONEST, k1, "read");
  const next = recovering();
  assert.deepEqual(next.onRecoverBatch(LIAR, [report(read, "write")]), []);
  assert.deepEqual(
    refuted(next.onRecoverBatch(HONEST, [report(honestRead)])).map((r) => r.rid),
    [LIAR],
  );
  assert.deepEqual(holders(next, k1), ["1111 read granted"]);
});

test("recovery conflicts - one report refutes every stale holder in its way, on every key", () => {
  const history = new History();
  const liarRead1 = history.take(LIAR, k1, "read");
  const otherRead1 = history.take(OTHER, k1, "read");
  const liarRead2 = history.take(LIAR, k2, "read");
  const honest1 = history.take(HONEST, k1, "write");
  const honest2 = history.take(HONEST, k2, "write");
  const next = recovering();
  assert.deepEqual(next.onRecoverBatch(LIAR, [report(liarRead1), report(liarRead2)]), []);
  assert.deepEqual(next.onRecoverBatch(OTHER, [report(otherRead1)]), []);
  assert.equal(next.entryCount, 3);
  const effects = next.onRecoverBatch(HONEST, [report(honest1), report(honest2)]);
  assert.deepEqual(
    refuted(effects).map((r) => `${r.rid.toString(16)} ${r.key}`),
    ["2222 k1", "3333 k1", "2222 k2"],
  );
  assert.deepEqual(holders(next, k1), ["1111 write granted"]);
  assert.deepEqual(holders(next, k2), ["1111 write granted"]);
  assert.equal(next.entryCount, 2);
  assert.equal(next.keyCount, 2);
  next.resumeAfterRecovery();
  assert.deepEqual(
    next.dump().map((e) => `${e.key} ${e.rid.toString(16)}`),
    ["k1 1111", "k2 1111"],
    "the index holds each key once",
  );
});

test("recovery conflicts - a refutation stands when the newcomer's batch is then refused for another report", () => {
  const history = new History();
  const stale = history.take(LIAR, k1, "read");
  const current = history.take(HONEST, k1, "write");
  const next = recovering();
  assert.deepEqual(next.onRecoverBatch(LIAR, [report(stale)]), []);
  const effects = next.onRecoverBatch(HONEST, [
    report(current),
    { ...report(current), key: k2, writeSeq: 1n << 70n },
  ]);
  assert.deepEqual(
    effects.map((e) => `${e.type} ${e.rid.toString(16)}`),
    ["refuted 2222", "protocol-error 1111"],
  );
  assert.deepEqual(holders(next, k1), [], "the stale entry is gone; the refused batch recovered nothing");
  assert.equal(next.entryCount, 0);
  assert.equal(next.clientLoad(LIAR).entries, 0);
});

test("recovery conflicts - a stale holder with queued requests on the key keeps its node consistent", () => {
  const history = new History();
  const stale = history.take(LIAR, k1, "write");
  const current = history.take(HONEST, k1, "write");
  const next = recovering();
  assert.deepEqual(next.onRecoverBatch(LIAR, [report(stale)]), []);
  // A request queued during the hold (resent by a client after the restart).
  assert.deepEqual(
    next.onRequest(OTHER, 1, { key: k1, oldMode: "null", newMode: "read", noQueue: false }),
    [],
  );
  assert.deepEqual(
    refuted(next.onRecoverBatch(HONEST, [report(current)])).map((r) => r.rid),
    [LIAR],
  );
  assert.deepEqual(holders(next, k1), ["1111 write granted", "3333 read requested"]);
  const resumed = next.resumeAfterRecovery();
  assert.deepEqual(
    resumed.map((e) => `${e.type} ${e.rid.toString(16)}`),
    ["invalidate 1111"],
    "the queued reader waits for the honest writer, never for the refuted one",
  );
});

test("recovery conflicts - a malformed grant proof is refused like any malformed report, never thrown", () => {
  const next = recovering();
  const base: RecoveredLock = {
    key: k1,
    mode: "write",
    writeSeq: 0n,
    grantTerm: 1n,
    grantNo: 1,
    grantTag: 1,
  };
  const malformed: Record<string, unknown>[] = [
    { grantTerm: undefined },
    { grantTerm: 1 },
    { grantTerm: -1n },
    { grantTerm: 1n << 64n },
    { grantNo: undefined },
    { grantNo: 1.5 },
    { grantNo: -1 },
    { grantNo: 2 ** 53 },
    { grantTag: "1" },
    { grantTag: Number.NaN },
  ];
  for (const fields of malformed) {
    const effects = next.onRecoverBatch(LIAR, [{ ...base, ...fields }]);
    assert.equal(effects.length, 1, JSON.stringify(Object.keys(fields)));
    assert.equal(effects[0]!.type, "protocol-error");
    assert.match(
      effects[0]!.type === "protocol-error" ? effects[0]!.error.message : "",
      /the grant proof reported for key "k1" is malformed/,
    );
  }
  assert.equal(next.entryCount, 0);
});
