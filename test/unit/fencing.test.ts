// Unit tests of the fence tracker: exact request shapes, B37 and B38, copies, and misuse.
import { test } from "node:test";
import assert from "node:assert/strict";
import { InvariantError } from "../../src/core/errors.js";
import { FenceTracker, type FenceReason } from "../../src/core/fencing.js";

const A = 0xa1a1_a1a1_a1a1_a1a1n;
const B = 0x0000_0000_0000_0002n;

test("fencing - a new request is running, with exactly the fields given", () => {
  const fences = new FenceTracker();
  assert.equal(
    fences.start({ rid: A, address: "10.0.0.1:7000", reason: "client_recovery", pid: 42 }, 1000),
    true,
  );
  assert.equal(fences.start({ rid: B, address: "[::1]:7000", reason: "client_reconnect" }, 1001), true);
  assert.deepEqual(fences.list(), [
    {
      rid: A,
      address: "10.0.0.1:7000",
      reason: "client_recovery",
      pid: 42,
      state: "running",
      startedAtMs: 1000,
    },
    { rid: B, address: "[::1]:7000", reason: "client_reconnect", state: "running", startedAtMs: 1001 },
  ]);
  assert.equal("pid" in fences.list()[1]!, false, "no pid field when none was given");
});

test("fencing - B37: a second start for the same rid, in any state, creates nothing", () => {
  const fences = new FenceTracker();
  assert.equal(fences.start({ rid: A, address: "a", reason: "client_reconnect" }, 1), true);
  assert.equal(fences.start({ rid: A, address: "b", reason: "client_recovery" }, 2), false);
  fences.onFenced(A);
  assert.equal(fences.start({ rid: A, address: "c", reason: "quorum_block_leader" }, 3), false);
  assert.equal(fences.list().length, 1);
  assert.equal(fences.list()[0]!.reason, "client_reconnect");
  fences.free(A);
  assert.equal(fences.start({ rid: A, address: "d", reason: "client_recovery" }, 4), true);
});

test("fencing - fenced → next(), then free", () => {
  const fences = new FenceTracker();
  fences.start({ rid: A, address: "a", reason: "client_recovery" }, 1);
  fences.start({ rid: B, address: "b", reason: "client_recovery" }, 2);
  assert.equal(fences.next(), undefined);
  fences.onFenced(B);
  assert.equal(fences.next()?.rid, B);
  assert.equal(fences.next()?.state, "fenced");
  fences.free(B);
  assert.equal(fences.next(), undefined);
  assert.equal(fences.has(B), false);
  assert.equal(fences.has(A), true);
});

test("fencing - error → next() with its reason; the first outcome sticks", () => {
  const fences = new FenceTracker();
  fences.start({ rid: A, address: "a", reason: "client_recovery" }, 1);
  fences.onError(A, "not serviced in 30000 ms");
  fences.onFenced(A);
  fences.onError(A, "second");
  assert.deepEqual(fences.next(), {
    rid: A,
    address: "a",
    reason: "client_recovery",
    state: "error",
    error: "not serviced in 30000 ms",
    startedAtMs: 1,
  });
});

test("fencing - B38: stop clears every request, whatever its state", () => {
  const fences = new FenceTracker();
  fences.start({ rid: A, address: "a", reason: "client_recovery" }, 1);
  fences.start({ rid: B, address: "b", reason: "quorum_block_leader" }, 1);
  fences.start({ rid: 3n, address: "c", reason: "client_reconnect" }, 1);
  fences.onFenced(A);
  fences.onError(B, "failed");
  fences.stop();
  assert.deepEqual(fences.list(), []);
  assert.equal(fences.next(), undefined);
  assert.deepEqual(fences.overdue(1e9, 0), []);
  for (const rid of [A, B, 3n]) assert.equal(fences.has(rid), false);
  assert.equal(fences.start({ rid: A, address: "a", reason: "client_recovery" }, 2), true, "nothing lingers");
});

test("fencing - returned requests are copies", () => {
  const fences = new FenceTracker();
  fences.start({ rid: A, address: "a", reason: "client_recovery" }, 1);
  const listed = fences.list()[0]!;
  listed.state = "fenced";
  listed.address = "changed";
  assert.equal(fences.next(), undefined);
  fences.onFenced(A);
  const next = fences.next()!;
  next.state = "running";
  assert.equal(fences.next()?.state, "fenced");
  assert.equal(fences.list()[0]!.address, "a");
});

test("fencing - overdue: running requests at or past the timeout, oldest first", () => {
  const fences = new FenceTracker();
  fences.start({ rid: A, address: "a", reason: "client_recovery" }, 100);
  fences.start({ rid: B, address: "b", reason: "client_recovery" }, 150);
  assert.deepEqual(
    fences.overdue(30_099, 30_000).map((r) => r.rid),
    [],
  );
  assert.deepEqual(
    fences.overdue(30_100, 30_000).map((r) => r.rid),
    [A],
  );
  assert.deepEqual(
    fences.overdue(30_150, 30_000).map((r) => r.rid),
    [A, B],
  );
  fences.onFenced(A);
  assert.deepEqual(
    fences.overdue(30_150, 30_000).map((r) => r.rid),
    [B],
  );
});

test("fencing - an unknown reason is a bug (InvariantError)", () => {
  const fences = new FenceTracker();
  assert.throws(
    () => fences.start({ rid: A, address: "a", reason: "because" as FenceReason }, 1),
    InvariantError,
  );
  assert.equal(fences.has(A), false);
});
