// The fence agents against real processes (io/fence.ts): the local agent and the command agent.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { commandFenceAgent, isLoopbackAddress, localFenceAgent } from "../../src/io/fence.js";

test("fence agents - local agent kills the registered pid and waits until it is gone", async () => {
  const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
  const exited = new Promise((resolve) => child.on("exit", (_code, signal) => resolve(signal)));
  await localFenceAgent().fence({ rid: 7n, address: "127.0.0.1:4000", reason: "client_reconnect", pid: child.pid! }, 5000);
  assert.equal(await exited, "SIGKILL");
});

test("fence agents - local agent: a pid already gone is fenced; no pid, or a remote address, is an error", async () => {
  const child = spawn(process.execPath, ["-e", ""], { stdio: "ignore" });
  await new Promise((resolve) => child.on("exit", resolve));
  await localFenceAgent().fence({ rid: 7n, address: "127.0.0.1:4000", reason: "client_recovery", pid: child.pid! }, 1000);
  await assert.rejects(localFenceAgent().fence({ rid: 7n, address: "127.0.0.1:4000", reason: "client_recovery" }, 1000), /needs the pid/);
  await assert.rejects(
    localFenceAgent().fence({ rid: 7n, address: "10.1.2.3:4000", reason: "client_recovery", pid: 12345 }, 1000),
    /only fences processes on this machine/,
  );
});

test("fence agents - command agent passes rid, address, reason and pid; exit 0 is fenced, others are errors", async () => {
  const out = join(tmpdir(), `keylock-fence-${process.pid}.txt`);
  const agent = commandFenceAgent(`echo "$KEYLOCK_FENCE_RID $KEYLOCK_FENCE_ADDRESS $KEYLOCK_FENCE_REASON $KEYLOCK_FENCE_PID" > ${out}`);
  await agent.fence({ rid: 0xabcn, address: "[::1]:7411", reason: "quorum_block_leader", pid: 42 }, 5000);
  assert.equal(readFileSync(out, "utf8").trim(), "0000000000000abc [::1]:7411 quorum_block_leader 42");
  rmSync(out);
  await assert.rejects(commandFenceAgent("echo nope >&2; exit 3").fence({ rid: 1n, address: "x", reason: "client_reconnect" }, 5000), /exited with status 3: nope/);
  await assert.rejects(commandFenceAgent("sleep 5").fence({ rid: 1n, address: "x", reason: "client_reconnect" }, 200), /did not finish within 200 ms/);
});

test("fence agents - loopback addresses", () => {
  for (const a of ["127.0.0.1:1", "[::1]:1", "[::ffff:127.0.0.1]:1", "127.8.9.10:5", "unknown"]) assert.equal(isLoopbackAddress(a), true, a);
  for (const a of ["10.0.0.1:1", "[fe80::1]:1", "192.168.1.1:80"]) assert.equal(isLoopbackAddress(a), false, a);
});
