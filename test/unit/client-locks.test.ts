// Unit tests of the client lock manager (src/core/client-locks.ts) beyond the transcripts, and a seeded
// randomized test against a tiny fake server. KEYLOCK_SEED=N replays one randomized run.
import { test } from "node:test";
import { isDeepStrictEqual } from "node:util";
import assert from "node:assert/strict";
import { ClientLocks, type ClientLockEffect, type WaiterId } from "../../src/core/client-locks.js";
import { InvariantError } from "../../src/core/errors.js";
import { compareKeys, keyFromBytes, keyFromText, keyToText, type Key } from "../../src/core/keys.js";
import { GrantTags } from "../../src/core/grant-tags.js";
import type {
  LockGrant,
  LockInvalidation,
  LockRequest,
  RecoveredLock,
} from "../../src/core/lock-messages.js";
import {
  canWrite,
  compatible,
  handlesShare,
  invalidationMode,
  satisfies,
  type LockMode,
} from "../../src/core/modes.js";
import { prng } from "../support/prng.js";

type UserMode = Exclude<LockMode, "null">;
const K1 = keyFromText("k1");
const K2 = keyFromText("k2");

/** Grants here are tagged as a server of term 1 with a key of zeros tags them for this rid. */
const RID = 1n;
const TAGS = new GrantTags(new Uint8Array(16));
let grantCount = 0;

/** A grant with a plausible proof: a non-null one carries term 1, the next grant number and its tag. */
function grantOf(key: Key, oldMode: LockMode, newMode: LockMode, writeSeq: bigint): LockGrant {
  if (newMode === "null") return { key, oldMode, newMode, writeSeq, grantTerm: 0n, grantNo: 0, grantTag: 0 };
  const grantNo = ++grantCount;
  const grantTag = TAGS.tag(RID, key, newMode, 1n, grantNo);
  return { key, oldMode, newMode, writeSeq, grantTerm: 1n, grantNo, grantTag };
}

/** The proof fields of `grant`, as recovery reports them. */
function proofOf(grant: LockGrant): Pick<RecoveredLock, "grantTerm" | "grantNo" | "grantTag"> {
  return { grantTerm: grant.grantTerm, grantNo: grant.grantNo, grantTag: grant.grantTag };
}

const NO_PROOF = { grantTerm: 0n, grantNo: 0, grantTag: 0 };

function only<T extends ClientLockEffect["type"]>(
  effects: ClientLockEffect[],
  type: T,
): Extract<ClientLockEffect, { type: T }>[] {
  return effects.filter((e): e is Extract<ClientLockEffect, { type: T }> => e.type === type);
}

/** A manager holding `mode` on `key` through handle `id` (granted by the server with `seq`). */
function holding(
  id: WaiterId,
  key: Key,
  mode: UserMode,
  seq = 7n,
  locks = new ClientLocks({ idleLockLimit: 100 }),
) {
  locks.acquire(id, key, mode, { nonblock: false });
  const granted = locks.onGrant(grantOf(key, "null", mode, canWrite(mode) ? seq : 0n));
  assert.equal(only(granted, "granted").length, 1);
  return locks;
}

// ---- events that cannot happen with a correct server or driver are bugs, reported loudly ----

test("client locks - a grant for a key with no outstanding request is an invariant error", () => {
  const locks = new ClientLocks({ idleLockLimit: 100 });
  assert.throws(() => locks.onGrant(grantOf(K1, "null", "read", 0n)), InvariantError);
  holding(1, K1, "read", 0n, locks);
  assert.throws(() => locks.onGrant(grantOf(K1, "null", "read", 0n)), InvariantError);
});

test("client locks - a grant of another mode than the one requested is an invariant error", () => {
  const locks = new ClientLocks({ idleLockLimit: 100 });
  locks.acquire(1, K1, "read", { nonblock: false });
  assert.throws(() => locks.onGrant(grantOf(K1, "null", "write", 1n)), /does not answer/);
});

test("client locks - a refusal without an outstanding no-queue request is an invariant error", () => {
  const locks = new ClientLocks({ idleLockLimit: 100 });
  assert.throws(() => locks.onRefuse(K1, "EAGAIN"), InvariantError);
  locks.acquire(1, K1, "read", { nonblock: false });
  assert.throws(() => locks.onRefuse(K1, "EAGAIN"), /no outstanding no-queue request/);
});

test("client locks - a waiter id already in use is refused", () => {
  const locks = holding(1, K1, "read");
  assert.throws(() => locks.acquire(1, K2, "read", { nonblock: false }), /already in use/);
  locks.acquire(2, K2, "read", { nonblock: false });
  assert.throws(() => locks.acquire(2, K1, "read", { nonblock: false }), /already in use/);
});

test("client locks - acquire in mode null and a bad idle limit are refused", () => {
  const locks = new ClientLocks({ idleLockLimit: 1 });
  assert.throws(() => locks.acquire(1, K1, "null" as UserMode, { nonblock: false }), InvariantError);
  assert.throws(() => new ClientLocks({ idleLockLimit: -1 }), InvariantError);
  assert.throws(() => new ClientLocks({ idleLockLimit: 1.5 }), InvariantError);
});

test("client locks - invalidationDone for an unknown or finished invalidation throws", () => {
  const locks = holding(1, K1, "write");
  locks.release(1);
  const effects = locks.onInvalidate(7, { key: K1, oldMode: "write", newMode: "null" });
  const [started] = only(effects, "invalidate");
  assert.ok(started);
  assert.throws(() => locks.invalidationDone(started.invalidationId + 1), /no invalidation in progress/);
  locks.invalidationDone(started.invalidationId);
  assert.throws(() => locks.invalidationDone(started.invalidationId), /no invalidation in progress/);
});

// ---- invalidations ----

test("client locks - the invalidation response is the exact echo, to the server's request id", () => {
  const locks = holding(1, K1, "write");
  locks.release(1);
  const invalidation: LockInvalidation = { key: K1, oldMode: "write", newMode: "read" };
  const [started] = only(locks.onInvalidate(42, invalidation), "invalidate");
  assert.deepEqual(started, { type: "invalidate", invalidationId: 1, key: K1, from: "write", to: "read" });
  const effects = locks.invalidationDone(1);
  assert.deepEqual(effects, [{ type: "send-invalidate-response", requestId: 42, response: invalidation }]);
  assert.equal(only(effects, "send-invalidate-response")[0]!.response, invalidation);
});

test("client locks - invalidation lowering table: the mode only goes down (LOWERED)", () => {
  // [held, target, mode after]: the greatest mode both satisfy.
  const cases: [UserMode, LockMode, LockMode][] = [
    ["write", "read", "read"],
    ["write", "null", "null"],
    ["write", "write_only", "null"],
    ["read", "read", "read"],
    ["read", "write", "read"],
    ["read", "write_only", "null"],
    ["write_only", "read", "null"],
    ["write_only", "write_only", "write_only"],
  ];
  for (const [held, target, after] of cases) {
    const locks = holding(1, K1, held);
    locks.release(1);
    const effects = locks.onInvalidate(7, { key: K1, oldMode: held, newMode: target });
    const started = only(effects, "invalidate");
    if (held === after) {
      // Nothing above the target is held: answered at once, no application callback.
      assert.deepEqual(started, [], `${held} -> ${target}`);
      assert.equal(only(effects, "send-invalidate-response").length, 1);
    } else {
      assert.deepEqual(started[0] && [started[0].from, started[0].to], [held, after], `${held} -> ${target}`);
    }
    assert.equal(locks.view(K1)?.mode ?? "null", after, `${held} -> ${target}`);
  }
});

test("client locks - an invalidation to read waits for write_only handles (read does not serve write_only)", () => {
  const locks = holding(1, K1, "write_only");
  assert.deepEqual(locks.onInvalidate(7, { key: K1, oldMode: "write_only", newMode: "read" }), []);
  const effects = locks.release(1);
  assert.deepEqual(only(effects, "invalidate")[0]?.to, "null");
});

test("client locks - a null->null self-invalidation (recovered null entry) is answered without a callback", () => {
  const locks = new ClientLocks({ idleLockLimit: 100 });
  locks.acquire(1, K1, "read", { nonblock: false });
  const effects = locks.onInvalidate(7, { key: K1, oldMode: "null", newMode: "null" });
  assert.deepEqual(
    effects.map((e) => e.type),
    ["send-invalidate-response"],
  );
  assert.equal(locks.view(K1)?.requestPending, "read");
});

// ---- failover edges ----

test("failover - a grant during an in-progress invalidation is applied, new users wait for the callback, recovery reports it", () => {
  const locks = new ClientLocks({ idleLockLimit: 100 });
  locks.acquire(1, K1, "read", { nonblock: false });
  const read = grantOf(K1, "null", "read", 0n);
  assert.equal(only(locks.onGrant(read), "granted").length, 1);
  locks.release(1);
  // The old server takes our read back; the callback starts (mode null).
  assert.equal(
    only(locks.onInvalidate(7, { key: K1, oldMode: "read", newMode: "null" }), "invalidate").length,
    1,
  );
  // A writer asks; recovery (new server) hears the pre-invalidation mode (B7).
  assert.deepEqual(locks.acquire(2, K1, "write", { nonblock: false }), [
    { type: "send-request", request: { key: K1, oldMode: "null", newMode: "write", noQueue: false } },
  ]);
  assert.deepEqual(locks.recoverBatch(null, 10), [{ key: K1, mode: "read", writeSeq: 0n, ...proofOf(read) }]);
  // The new server believes read and grants the upgrade: applied, but the writer waits for the callback.
  const upgrade = grantOf(K1, "read", "write", 9n);
  assert.deepEqual(locks.onGrant(upgrade), []);
  assert.deepEqual(locks.recoverBatch(null, 10), [
    { key: K1, mode: "write", writeSeq: 9n, ...proofOf(upgrade) },
  ]);
  const effects = locks.invalidationDone(1);
  assert.deepEqual(
    effects.map((e) => e.type),
    ["send-invalidate-response", "granted"],
  );
  assert.deepEqual(only(effects, "granted")[0]?.writeSeq, 9n);
});

// ---- recovery ----

test("recovery - batches walk keys in bytewise order, strictly after the cursor", () => {
  const locks = new ClientLocks({ idleLockLimit: 100 });
  const raw = [[0xff], [0x00], [0x00, 0x00], [0x7f, 0x01], [0x80], []].map((b) =>
    keyFromBytes(new Uint8Array(b)),
  );
  raw.forEach((key, i) => holding(i + 1, key, "read", 0n, locks));
  const seen: Key[] = [];
  let after: Key | null = null;
  for (;;) {
    const batch = locks.recoverBatch(after, 4);
    if (batch.length === 0) break;
    assert.ok(batch.length <= 4);
    seen.push(...batch.map((l) => l.key));
    after = batch.at(-1)!.key;
  }
  const hex = (k: Key) => [...k].map((c) => c.charCodeAt(0).toString(16).padStart(2, "0")).join("");
  assert.deepEqual(seen.map(hex), ["", "00", "0000", "7f01", "80", "ff"]);
  assert.throws(() => locks.recoverBatch(null, 0), InvariantError);
});

test("recovery - batches come in compareKeys order over random binary keys (the sort behind them is the default string sort)", () => {
  const random = prng(11);
  const locks = new ClientLocks({ idleLockLimit: 1000 });
  const keys = new Set<Key>();
  while (keys.size < 300) {
    const length = Math.floor(random() * 4);
    keys.add(keyFromBytes(Uint8Array.from({ length }, () => (random() < 0.5 ? Math.floor(random() * 3) : 0x7e + Math.floor(random() * 0x82)))));
  }
  [...keys].forEach((key, i) => holding(i + 1, key, "read", 0n, locks));
  const seen: Key[] = [];
  for (let after: Key | null = null; ; ) {
    const batch = locks.recoverBatch(after, 1 + Math.floor(random() * 40));
    if (batch.length === 0) break;
    seen.push(...batch.map((l) => l.key));
    after = batch.at(-1)!.key;
  }
  assert.deepEqual(seen, [...keys].sort(compareKeys));
});

test("recovery - onNewServer drops every invalidation not started, on every lock, however many came and went before", () => {
  const random = prng(5);
  for (let round = 0; round < 50; round++) {
    const locks = new ClientLocks({ idleLockLimit: 100 });
    const keys = Array.from({ length: 6 }, (_, i) => keyFromText(`n${i}`));
    let nextId = 1;
    let nextRequest = 1;
    const handles = new Map<Key, WaiterId[]>();
    /** The invalidation in progress per key (its callback "running"), by invalidation id. */
    const running = new Map<Key, number>();
    const take = (effects: ClientLockEffect[]): void => {
      for (const e of only(effects, "invalidate")) running.set(e.key, e.invalidationId);
    };
    for (const key of keys) {
      const id = nextId++;
      holding(id, key, "read", 0n, locks);
      handles.set(key, [id]);
    }
    if (random() < 0.3) {
      // reset() forgets everything queued so far; what is queued after it counts afresh.
      for (const key of keys) locks.onInvalidate(nextRequest++, { key, oldMode: "read", newMode: "null" });
      locks.reset("EFENCED");
      handles.clear();
      for (const key of keys) {
        const id = nextId++;
        locks.acquire(id, key, "read", { nonblock: false });
        // after reset() the manager is empty but not shut down: a new grant makes a lock again
        locks.onGrant(grantOf(key, "null", "read", 0n));
        handles.set(key, [id]);
      }
    }
    for (let step = 0; step < 40; step++) {
      const key = keys[Math.floor(random() * keys.length)]!;
      const held = handles.get(key) ?? [];
      const r = random();
      if (r < 0.4) {
        take(locks.onInvalidate(nextRequest++, { key, oldMode: "read", newMode: "null" }));
      } else if (r < 0.6 && held.length > 0) {
        take(locks.release(held.pop()!));
      } else if (r < 0.8 && running.has(key)) {
        const id = running.get(key)!;
        running.delete(key);
        take(locks.invalidationDone(id));
      } else if (locks.view(key)?.invalidations === 0 && locks.view(key)?.mode === "read") {
        // A cached re-acquire (served at once: no invalidation queued, mode read).
        const id = nextId++;
        assert.equal(only(locks.acquire(id, key, "read", { nonblock: false }), "granted").length, 1);
        held.push(id);
        handles.set(key, held);
      }
    }
    take(locks.onNewServer());
    for (const key of keys) {
      const view = locks.view(key);
      if (view === undefined) continue;
      assert.equal(view.invalidations, running.has(key) ? 1 : 0, `round ${round}: ${keyToText(key)} keeps only its invalidation in progress`);
    }
  }
});

test("recovery - the key order follows locks created and freed between batches", () => {
  const locks = holding(1, keyFromText("b"), "read");
  assert.deepEqual(
    locks.recoverBatch(null, 1).map((l) => keyToText(l.key)),
    ["b"],
  );
  holding(2, keyFromText("a"), "read", 0n, locks);
  holding(3, keyFromText("c"), "read", 0n, locks);
  assert.deepEqual(
    locks.recoverBatch(keyFromText("b"), 5).map((l) => keyToText(l.key)),
    ["c"],
  );
  assert.deepEqual(
    locks.recoverBatch(null, 5).map((l) => keyToText(l.key)),
    ["a", "b", "c"],
  );
});

test("recovery - each lock is reported with the proof of its latest grant, a null report with zeros", () => {
  const locks = new ClientLocks({ idleLockLimit: 100 });
  const report = (): RecoveredLock[] => locks.recoverBatch(null, 10);
  // K1: granted write (proof P1), released; the server takes it down to read.
  locks.acquire(1, K1, "write", { nonblock: false });
  const p1 = grantOf(K1, "null", "write", 5n);
  assert.equal(only(locks.onGrant(p1), "granted").length, 1);
  locks.release(1);
  const [toRead] = only(locks.onInvalidate(7, { key: K1, oldMode: "write", newMode: "read" }), "invalidate");
  // While the callback runs: the pre-invalidation mode (B7), with P1.
  assert.deepEqual(report(), [{ key: K1, mode: "write", writeSeq: 5n, ...proofOf(p1) }]);
  locks.invalidationDone(toRead!.invalidationId);
  // Lowered to read, still with P1: a write grant's tag covers a report of read.
  assert.deepEqual(report(), [{ key: K1, mode: "read", writeSeq: 5n, ...proofOf(p1) }]);
  assert.equal(TAGS.verify(RID, report()[0]!), true);
  // K2: granted read (P2), released, taken back to null while a new caller waits: reported null, zeros.
  locks.acquire(2, K2, "read", { nonblock: false });
  const p2 = grantOf(K2, "null", "read", 0n);
  assert.equal(only(locks.onGrant(p2), "granted").length, 1);
  locks.release(2);
  const [toNull] = only(locks.onInvalidate(8, { key: K2, oldMode: "read", newMode: "null" }), "invalidate");
  assert.deepEqual(report()[1], { key: K2, mode: "read", writeSeq: 0n, ...proofOf(p2) });
  locks.acquire(3, K2, "read", { nonblock: false });
  locks.invalidationDone(toNull!.invalidationId);
  assert.equal(locks.view(K2)?.mode, "null");
  assert.deepEqual(report()[1], { key: K2, mode: "null", writeSeq: 0n, ...NO_PROOF });
  // Later grants replace the proofs: K1 upgraded to write (P3), K2 granted read again (P4).
  locks.acquire(4, K1, "write", { nonblock: false });
  const p3 = grantOf(K1, "read", "write", 9n);
  assert.equal(only(locks.onGrant(p3), "granted").length, 1);
  const p4 = grantOf(K2, "null", "read", 0n);
  assert.deepEqual(
    only(locks.onGrant(p4), "granted").map((e) => e.waiterId),
    [3],
  );
  assert.deepEqual(report(), [
    { key: K1, mode: "write", writeSeq: 9n, ...proofOf(p3) },
    { key: K2, mode: "read", writeSeq: 0n, ...proofOf(p4) },
  ]);
  assert.notDeepEqual(proofOf(p3), proofOf(p1));
});

// ---- handles, tokens, views ----

test("client locks - fencing tokens belong to write and write_only handles; read handles carry 0n", () => {
  const locks = holding(1, K1, "write", 11n);
  locks.release(1);
  assert.deepEqual(only(locks.acquire(2, K1, "read", { nonblock: false }), "granted")[0]?.writeSeq, 0n);
  locks.release(2);
  assert.deepEqual(only(locks.acquire(3, K1, "write", { nonblock: false }), "granted")[0]?.writeSeq, 11n);
});

test("client locks - view shows the whole per-key state", () => {
  const locks = holding(1, K1, "read");
  locks.acquire(2, K1, "write", { nonblock: false });
  locks.onInvalidate(7, { key: K1, oldMode: "read", newMode: "null" });
  assert.deepEqual(locks.view(K1), {
    key: K1,
    mode: "read",
    writeSeq: 0n,
    users: { read: 1, write: 0, write_only: 0 },
    waiters: 1,
    requestPending: "write",
    invalidations: 1,
    idle: false,
  });
  assert.equal(locks.view(K2), undefined);
  assert.equal(locks.lockCount, 1);
});

test("client locks - a granted no-queue request serves its waiter before the blocking waiters behind it", () => {
  const locks = new ClientLocks({ idleLockLimit: 100 });
  assert.deepEqual(
    only(locks.acquire(1, K1, "write", { nonblock: true }), "send-request")[0]?.request.noQueue,
    true,
  );
  assert.deepEqual(locks.acquire(2, K1, "read", { nonblock: false }), []);
  const effects = locks.onGrant(grantOf(K1, "null", "write", 3n));
  assert.deepEqual(
    effects.map((e) => e.type),
    ["granted"],
  );
  assert.deepEqual(only(locks.release(1), "granted")[0]?.waiterId, 2);
});

test("client locks - idle limit 0: each acquire shrinks at most the one oldest idle lock", () => {
  const locks = new ClientLocks({ idleLockLimit: 0 });
  locks.acquire(1, K1, "read", { nonblock: false });
  locks.onGrant(grantOf(K1, "null", "read", 0n));
  locks.release(1);
  const effects = locks.acquire(2, K2, "read", { nonblock: false });
  assert.deepEqual(
    only(effects, "send-request").map((e) => [keyToText(e.request.key), e.request.newMode]),
    [
      ["k2", "read"],
      ["k1", "null"],
    ],
  );
  // The lock being acquired is never the one shrunk.
  locks.onGrant(grantOf(K2, "null", "read", 0n));
  locks.release(2);
  assert.deepEqual(only(locks.acquire(3, K2, "read", { nonblock: false }), "send-request"), []);
});

// ---- shutdown and reset ----

test("shutdown - the code is the one given, and nothing is shrunk after it", () => {
  const locks = new ClientLocks({ idleLockLimit: 0 });
  locks.acquire(1, K1, "read", { nonblock: false });
  assert.deepEqual(
    locks.shutdown("EFENCED").map((e) => e.type === "failed" && e.code),
    ["EFENCED"],
  );
  assert.deepEqual(
    locks.acquire(2, K2, "write", { nonblock: true }).map((e) => e.type === "failed" && e.code),
    ["EFENCED"],
  );
  // The outstanding request is still answered; the idle lock stays cached (no shrink after shutdown).
  locks.onGrant(grantOf(K1, "null", "read", 0n));
  assert.deepEqual(
    locks.acquire(3, K1, "read", { nonblock: false }).map((e) => e.type),
    ["failed"],
  );
  assert.equal(locks.view(K1)?.idle, true);
});

test("reset - held handles become orphans, in-progress callbacks are voided, new ids still checked", () => {
  const locks = holding(1, K1, "write");
  locks.acquire(2, K2, "read", { nonblock: false });
  locks.onGrant(grantOf(K2, "null", "read", 0n));
  locks.release(2);
  const [started] = only(locks.onInvalidate(7, { key: K2, oldMode: "read", newMode: "null" }), "invalidate");
  assert.deepEqual(locks.reset("ESHUTDOWN"), []);
  assert.equal(locks.lockCount, 0);
  assert.deepEqual(locks.invalidationDone(started!.invalidationId), []);
  assert.deepEqual(locks.release(1), []);
  assert.throws(() => locks.release(1), /double release/);
  // The table works again, and invalidation ids keep increasing.
  holding(3, K1, "write", 8n, locks);
  locks.release(3);
  const [next] = only(locks.onInvalidate(8, { key: K1, oldMode: "write", newMode: "null" }), "invalidate");
  assert.ok(next!.invalidationId > started!.invalidationId);
  assert.throws(() => locks.invalidationDone(next!.invalidationId + 5), InvariantError);
});

// ---- randomized: one ClientLocks against a tiny fake server ----


type ToServer =
  | { type: "request"; request: LockRequest }
  | { type: "response"; epoch: number; requestId: number; response: LockInvalidation };
type ToClient =
  | { type: "grant"; request: LockRequest; writeSeq: bigint; proof: Proof }
  | { type: "refuse"; request: LockRequest }
  | { type: "invalidate"; requestId: number; invalidation: LockInvalidation };

type Proof = Pick<LockGrant, "grantTerm" | "grantNo" | "grantTag">;

/**
 * One run. The fake server keeps what it believes we hold per key, answers requests in arrival order
 * (invalidating our own conflicting grant first, as the real server does), invents invalidations for
 * "other clients", sends spurious duplicates, and fails over (dropping messages in flight, rebuilding
 * its beliefs from recovery batches; each server tags its grants with its term, epoch + 1, and numbers
 * them from 1). Messages are delivered per key in order, after random delays.
 */
function randomRun(seed: number, steps: number, reached: Set<string>): void {
  const random = prng(seed);
  const pick = <T>(items: readonly T[]): T | undefined =>
    items.length === 0 ? undefined : items[Math.floor(random() * items.length)];
  const fail = (message: string): never => {
    throw new Error(`seed ${seed}: ${message} (KEYLOCK_SEED=${seed} replays this run)`);
  };
  const keys = ["a", "b", "c", "d", "e"].map(keyFromText);
  const modes: UserMode[] = ["read", "write", "write_only"];
  const locks = new ClientLocks({ idleLockLimit: 2 });

  // Client-side bookkeeping from the effects.
  const held = new Map<WaiterId, { key: Key; mode: UserMode }>();
  const waiting = new Set<WaiterId>();
  const resolved = new Set<WaiterId>();
  const outstanding = new Map<Key, LockRequest>();
  /** Application callbacks running: the app still flushes what it did under `from` until done. */
  const callbacks = new Map<number, { key: Key; from: LockMode }>();
  /** The latest non-null grant delivered on each key: recovery must report its proof. */
  const latestGrant = new Map<Key, { mode: LockMode; proof: Proof }>();
  let nextWaiter = 1;

  // The fake server.
  let epoch = 0;
  let seq = 0n;
  let nextServerRequestId = 1;
  let serverGrants = 0;
  const believed = new Map<Key, LockMode>();
  const requests = new Map<Key, LockRequest>();
  const invalidating = new Map<Key, { requestId: number; target: LockMode }>();
  const toServer = new Map<Key, ToServer[]>(keys.map((k) => [k, []]));
  const toClient = new Map<Key, ToClient[]>(keys.map((k) => [k, []]));

  const apply = (effects: ClientLockEffect[]): void => {
    for (const effect of effects) {
      switch (effect.type) {
        case "send-request": {
          const key = effect.request.key;
          if (outstanding.has(key)) fail(`second outstanding request on ${keyToText(key)}`);
          if (effect.request.newMode === "null") reached.add("idle lock shrunk");
          if (effect.request.noQueue) reached.add("no-queue request");
          outstanding.set(key, effect.request);
          toServer.get(key)!.push({ type: "request", request: effect.request });
          break;
        }
        case "send-invalidate-response": {
          const key = effect.response.key;
          toServer
            .get(key)!
            .push({ type: "response", epoch, requestId: effect.requestId, response: effect.response });
          break;
        }
        case "invalidate":
          callbacks.set(effect.invalidationId, { key: effect.key, from: effect.from });
          break;
        case "granted":
        case "failed":
          if (!waiting.delete(effect.waiterId))
            fail(`waiter ${effect.waiterId} resolved but was not waiting`);
          if (resolved.has(effect.waiterId)) fail(`waiter ${effect.waiterId} resolved twice`);
          resolved.add(effect.waiterId);
          if (effect.type === "granted")
            held.set(effect.waiterId, { key: effect.key, mode: effect.mode as UserMode });
          else reached.add(`failed ${effect.code}`);
          break;
      }
    }
  };

  const serverProcess = (key: Key): void => {
    if (invalidating.has(key)) return; // nothing is granted while an invalidation is outstanding
    const request = requests.get(key);
    if (request === undefined) return;
    const granted = believed.get(key) ?? "null";
    if (granted === "null" || compatible(granted, request.newMode, true)) {
      requests.delete(key);
      if (request.newMode === "null") believed.delete(key);
      else believed.set(key, request.newMode);
      const writeSeq = canWrite(request.newMode) ? ++seq : 0n;
      toClient.get(key)!.push({ type: "grant", request, writeSeq, proof: proofFor(key, request.newMode) });
    } else if (request.noQueue) {
      requests.delete(key);
      toClient.get(key)!.push({ type: "refuse", request });
    } else {
      invalidate(key, invalidationMode(granted, request.newMode));
    }
  };

  const proofFor = (key: Key, mode: LockMode): Proof => {
    if (mode === "null") return { grantTerm: 0n, grantNo: 0, grantTag: 0 };
    const term = BigInt(epoch + 1);
    const grantNo = ++serverGrants;
    return { grantTerm: term, grantNo, grantTag: TAGS.tag(RID, key, mode, term, grantNo) };
  };

  /** A recovery report carries the proof of the key's latest grant (zeros when null), which verifies. */
  const checkReport = (lock: RecoveredLock): void => {
    const proof = { grantTerm: lock.grantTerm, grantNo: lock.grantNo, grantTag: lock.grantTag };
    const text = `${keyToText(lock.key)} ${lock.mode} term ${lock.grantTerm} grant ${lock.grantNo}`;
    if (lock.mode === "null") {
      if (lock.grantTerm !== 0n || lock.grantNo !== 0 || lock.grantTag !== 0)
        fail(`null report with a proof: ${text}`);
      return;
    }
    const latest = latestGrant.get(lock.key);
    if (latest === undefined) return fail(`report of a lock never granted: ${text}`);
    if (!isDeepStrictEqual(proof, latest.proof)) fail(`report not of the latest grant: ${text}`);
    if (!TAGS.verify(RID, lock)) fail(`report whose proof does not verify: ${text}`);
    if (locks.view(lock.key)?.mode !== lock.mode) reached.add("pre-invalidation report with a proof");
    else if (latest.mode !== lock.mode) reached.add("lowered report with its grant's proof");
    else reached.add("report with a proof");
  };

  const invalidate = (key: Key, target: LockMode): void => {
    const requestId = nextServerRequestId++;
    invalidating.set(key, { requestId, target });
    const oldMode = believed.get(key) ?? "null";
    toClient
      .get(key)!
      .push({ type: "invalidate", requestId, invalidation: { key, oldMode, newMode: target } });
  };

  const deliverToServer = (key: Key): void => {
    const message = toServer.get(key)!.shift()!;
    if (message.type === "request") {
      if (requests.has(key)) fail(`server got a second request on ${keyToText(key)}`);
      requests.set(key, message.request);
    } else {
      const pending = invalidating.get(key);
      if (message.epoch !== epoch || pending?.requestId !== message.requestId) return; // stale or duplicate
      invalidating.delete(key);
      if (pending.target === "null") believed.delete(key);
      else believed.set(key, pending.target);
    }
    serverProcess(key);
  };

  const deliverToClient = (key: Key): void => {
    const message = toClient.get(key)!.shift()!;
    switch (message.type) {
      case "grant":
        if ([...callbacks.values()].some((c) => c.key === key)) reached.add("grant during a callback");
        outstanding.delete(key);
        if (message.request.newMode !== "null")
          latestGrant.set(key, { mode: message.request.newMode, proof: message.proof });
        apply(
          locks.onGrant({
            key,
            oldMode: message.request.oldMode,
            newMode: message.request.newMode,
            writeSeq: message.writeSeq,
            ...message.proof,
          }),
        );
        break;
      case "refuse":
        reached.add("refused");
        outstanding.delete(key);
        apply(locks.onRefuse(key, "EAGAIN"));
        break;
      case "invalidate": {
        const effects = locks.onInvalidate(message.requestId, message.invalidation);
        if (effects.some((e) => e.type === "send-invalidate-response"))
          reached.add("invalidation answered at once");
        apply(effects);
        break;
      }
    }
  };

  const failover = (): void => {
    reached.add("failover");
    epoch++;
    for (const key of keys) {
      // Answers lost with the old server: the session layer resends those requests to the new one.
      for (const message of toClient.get(key)!) {
        if (message.type === "grant" || message.type === "refuse") requests.set(key, message.request);
      }
      toClient.set(key, []);
      toServer.set(
        key,
        toServer.get(key)!.filter((m) => m.type === "request"),
      );
    }
    invalidating.clear();
    believed.clear();
    serverGrants = 0;
    let after: Key | null = null;
    for (;;) {
      const batch = locks.recoverBatch(after, 1 + Math.floor(random() * 3));
      if (batch.length === 0) break;
      for (const lock of batch) {
        if (after !== null && lock.key <= after) fail("recovery batch out of order");
        checkReport(lock);
        if (lock.mode !== "null") believed.set(lock.key, lock.mode);
        after = lock.key;
      }
    }
    for (const key of keys) serverProcess(key);
  };

  const check = (where: string): void => {
    for (const key of keys) {
      const handles = [...held.values()].filter((h) => h.key === key);
      const view = locks.view(key);
      if (handles.length > 0 && view === undefined)
        fail(`${where}: handles on ${keyToText(key)} but no lock`);
      if (view !== undefined) {
        for (const m of modes) {
          const count = handles.filter((h) => h.mode === m).length;
          if (view.users[m] !== count)
            fail(`${where}: ${keyToText(key)} users[${m}]=${view.users[m]}, handles ${count}`);
          if (count > 0 && !satisfies(view.mode, m)) fail(`${where}: ${m} handle under mode ${view.mode}`);
        }
        if ((view.requestPending !== null) !== outstanding.has(key)) fail(`${where}: request state differs`);
      }
      for (let i = 0; i < handles.length; i++) {
        for (let j = i + 1; j < handles.length; j++) {
          if (!handlesShare(handles[i]!.mode, handles[j]!.mode)) {
            fail(`${where}: ${handles[i]!.mode} and ${handles[j]!.mode} handles on ${keyToText(key)}`);
          }
        }
      }
      // Coherence: nothing is used above what the server believes we hold (the invalidation reply's
      // promise): no handle, and no callback still flushing what was done under a higher mode (B7).
      const granted = believed.get(key) ?? "null";
      for (const h of handles) {
        if (!satisfies(granted, h.mode))
          fail(`${where}: ${h.mode} handle while the server believes ${granted}`);
      }
      for (const c of callbacks.values()) {
        if (c.key === key && !satisfies(granted, c.from)) {
          fail(`${where}: callback from ${c.from} still running while the server believes ${granted}`);
        }
      }
    }
  };

  const nonEmpty = (queues: Map<Key, unknown[]>): Key[] => keys.filter((k) => queues.get(k)!.length > 0);

  // Faulty phase: everything random.
  for (let step = 0; step < steps; step++) {
    const r = random();
    let what: string;
    if (r < 0.2) {
      const id = nextWaiter++;
      waiting.add(id);
      what = `acquire ${id}`;
      apply(locks.acquire(id, pick(keys)!, pick(modes)!, { nonblock: random() < 0.15 }));
    } else if (r < 0.35) {
      const id = pick([...held.keys()]);
      what = `release ${id}`;
      if (id !== undefined) {
        held.delete(id);
        apply(locks.release(id));
      }
    } else if (r < 0.38) {
      const id = pick([...waiting]);
      what = `abort ${id}`;
      if (id !== undefined) apply(locks.abort(id));
    } else if (r < 0.55) {
      const key = pick(nonEmpty(toServer));
      what = "deliver to server";
      if (key !== undefined) deliverToServer(key);
    } else if (r < 0.75) {
      const key = pick(nonEmpty(toClient));
      what = "deliver to client";
      if (key !== undefined) deliverToClient(key);
    } else if (r < 0.83) {
      const id = pick([...callbacks.keys()]);
      what = `done ${id}`;
      if (id !== undefined) {
        callbacks.delete(id);
        apply(locks.invalidationDone(id));
      }
    } else if (r < 0.93) {
      // Another client wants the key: invalidate what the server believes we hold.
      const key = pick(keys.filter((k) => believed.has(k) && !invalidating.has(k)));
      what = "other client invalidates";
      if (key !== undefined)
        invalidate(key, believed.get(key) === "write" && random() < 0.5 ? "read" : "null");
    } else if (r < 0.97) {
      // A spurious duplicate (an old server's copy): any target; its reply is ignored by the server.
      const key = pick(keys)!;
      what = "duplicate invalidation";
      const invalidation = {
        key,
        oldMode: "write" as const,
        newMode: pick(["null", "read", "write"] as const)!,
      };
      toClient.get(key)!.push({ type: "invalidate", requestId: nextServerRequestId++, invalidation });
    } else if (r < 0.985) {
      const after = random() < 0.5 ? null : pick(keys)!;
      what = "recovery batch";
      const batch = locks.recoverBatch(after, 2);
      if (batch.some((l) => after !== null && l.key <= after))
        fail("recovery returned a key not after the cursor");
      batch.forEach(checkReport);
    } else {
      what = "failover";
      failover();
    }
    check(`step ${step} (${what})`);
  }

  // Healed phase: no new acquires, invalidations or failovers; callers release what they hold. Every
  // waiter must end granted or failed.
  for (let step = 0; ; step++) {
    if (step > 100_000) fail(`no convergence; still waiting: ${[...waiting].join(",")}`);
    const moves: (() => void)[] = [];
    const toS = nonEmpty(toServer);
    const toC = nonEmpty(toClient);
    if (toS.length > 0) moves.push(() => deliverToServer(pick(toS)!));
    if (toC.length > 0) moves.push(() => deliverToClient(pick(toC)!));
    if (callbacks.size > 0) {
      moves.push(() => {
        const id = pick([...callbacks.keys()])!;
        callbacks.delete(id);
        apply(locks.invalidationDone(id));
      });
    }
    if (held.size > 0) {
      moves.push(() => {
        const id = pick([...held.keys()])!;
        held.delete(id);
        apply(locks.release(id));
      });
    }
    if (moves.length === 0) break;
    pick(moves)!();
    check(`healed step ${step}`);
  }
  if (waiting.size > 0) fail(`waiters never granted or failed: ${[...waiting].join(",")}`);
  for (const key of keys) {
    const view = locks.view(key);
    if (view !== undefined && !view.idle)
      fail(
        `${keyToText(key)} not idle at the end: ${JSON.stringify({ ...view, writeSeq: String(view.writeSeq) })}`,
      );
  }
}

test("client locks - randomized against a fake server: invariants hold and every waiter finishes", () => {
  const replay = process.env.KEYLOCK_SEED;
  const base = replay !== undefined ? Number(replay) : Math.floor(Math.random() * 2 ** 31);
  const runs = replay !== undefined ? 1 : 200;
  console.log(`client-locks randomized: seeds ${base}..${base + runs - 1} (KEYLOCK_SEED=N replays seed N)`);
  const reached = new Set<string>();
  for (let i = 0; i < runs; i++) randomRun(base + i, 1500, reached);
  if (replay === undefined) {
    // The runs must reach the rare-but-legal paths, or they prove little.
    const wanted = [
      "failover",
      "refused",
      "no-queue request",
      "idle lock shrunk",
      "grant during a callback",
      "invalidation answered at once",
      "failed EAGAIN",
      "failed EABORTED",
      "report with a proof",
      "lowered report with its grant's proof",
      "pre-invalidation report with a proof",
    ];
    assert.deepEqual(
      wanted.filter((w) => !reached.has(w)),
      [],
      "paths the randomized runs never reached",
    );
  }
});

test("waiters - locks without waiters share no state: queues on other keys stay their own, FIFO, through grants, aborts and failures", () => {
  const locks = new ClientLocks({ idleLockLimit: 100 });
  const request = (key: Key, mode: "read" | "write") => ({ type: "send-request", request: { key, oldMode: "null", newMode: mode, noQueue: false } });
  // Two keys, each with a waiter queued behind its first grant; a third key never has one.
  assert.deepEqual(locks.acquire(1, K1, "write", { nonblock: false }), [request(K1, "write")]);
  assert.deepEqual(locks.acquire(2, K2, "read", { nonblock: false }), [request(K2, "read")]);
  assert.deepEqual(locks.acquire(3, K1, "write", { nonblock: false }), []);
  assert.equal(locks.view(K1)?.waiters, 2);
  assert.equal(locks.view(K2)?.waiters, 1);
  // The grant on K2 serves its only waiter; K1's queue is untouched.
  assert.deepEqual(
    only(locks.onGrant(grantOf(K2, "null", "read", 0n)), "granted").map((e) => e.waiterId),
    [2],
  );
  assert.equal(locks.view(K2)?.waiters, 0);
  assert.equal(locks.view(K1)?.waiters, 2);
  // A nonblock acquire on K2 behind nothing is served from the cache; on K1 it fails (waiters queued).
  assert.deepEqual(only(locks.acquire(4, K2, "read", { nonblock: true }), "granted").map((e) => e.waiterId), [4]);
  assert.deepEqual(only(locks.acquire(5, K1, "read", { nonblock: true }), "failed").map((e) => e.code), ["EAGAIN"]);
  assert.equal(locks.view(K2)?.waiters, 0);
  // K1: the first waiter is served by the grant, the second waits for its release, then is served too.
  assert.deepEqual(
    only(locks.onGrant(grantOf(K1, "null", "write", 3n)), "granted").map((e) => e.waiterId),
    [1],
  );
  assert.equal(locks.view(K1)?.waiters, 1);
  assert.deepEqual(locks.abort(3).map((e) => e.type), ["failed"]);
  assert.equal(locks.view(K1)?.waiters, 0);
  assert.deepEqual(locks.abort(3), []);
  // Queue again on the emptied key: a fresh queue, FIFO.
  assert.deepEqual(locks.acquire(6, K1, "write", { nonblock: false }), []);
  assert.deepEqual(locks.acquire(7, K1, "write", { nonblock: false }), []);
  assert.equal(locks.view(K2)?.waiters, 0);
  assert.deepEqual(only(locks.release(1), "granted").map((e) => e.waiterId), [6]);
  assert.deepEqual(only(locks.release(6), "granted").map((e) => e.waiterId), [7]);
  assert.equal(locks.view(K1)?.waiters, 0);
  assert.equal(locks.view(K2)?.waiters, 0);
});
