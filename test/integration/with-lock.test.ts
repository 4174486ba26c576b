// client.withLock (DESIGN §6): acquire, run, release even on throw; acquire errors reject before fn runs.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { connect, KeylockError, type LockClient } from "../../src/index.js";
import { freePort, startUp, tempDir, type KeylockUp } from "../support/processes.js";

let up: KeylockUp;
let dir: { path: string; remove(): void };
let client: LockClient;
let other: LockClient;

before(async () => {
  dir = tempDir("with-lock");
  up = await startUp(dir.path, await freePort());
  client = await connect({ servers: [up.address], name: "with-lock" });
  other = await connect({ servers: [up.address], name: "other" });
});

after(async () => {
  await Promise.all([client.close(), other.close()]);
  await up.kill("SIGTERM");
  dir.remove();
});

test("withLock - runs fn with a held handle, returns its value and releases the lock", async () => {
  const seen = await client.withLock("wl/1", "write", (handle) => {
    assert.equal(handle.mode, "write");
    assert.ok(handle.isValid && handle.writeSeq > 0n);
    return handle.writeSeq;
  });
  assert.ok(seen > 0n);
  // Released: another client gets a conflicting mode.
  (await other.acquire("wl/1", "write")).release();
});

test("withLock - releases when fn throws or rejects, and passes the error on", async () => {
  let held: { isReleased: boolean } | undefined;
  await assert.rejects(
    client.withLock("wl/2", "write", async (handle) => {
      held = handle;
      await new Promise((resolve) => setTimeout(resolve, 5));
      throw new Error("boom");
    }),
    /boom/,
  );
  assert.equal(held?.isReleased, true);
  (await other.acquire("wl/2", "read")).release();
  // fn may release early itself; withLock does not release twice.
  await client.withLock("wl/2", "write", (handle) => handle.release());
});

test("withLock - an acquire error rejects before fn runs (nonblock EAGAIN)", async () => {
  const holding = await other.acquire("wl/3", "write");
  let ran = false;
  const error = await client.withLock("wl/3", "write", () => (ran = true), { nonblock: true }).catch((e: unknown) => e);
  assert.ok(error instanceof KeylockError && error.code === "EAGAIN", String(error));
  assert.equal(ran, false);
  holding.release();
});
