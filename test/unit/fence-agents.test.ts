// The fence agents against real processes (io/fence.ts): the local agent and the command agent.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { commandFenceAgent, isLoopbackAddress, localFenceAgent } from "../../src/io/fence.js";
import { processStart } from "../../src/io/peer-process.js";

const linux = process.platform === "linux";

function sleeper(): ChildProcess {
  return spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
}

function exitSignal(child: ChildProcess): Promise<NodeJS.Signals | null> {
  return new Promise((resolve) => child.on("exit", (_code, signal) => resolve(signal)));
}

test("fence agents - local agent kills the process it found (pid and start token) and waits until it is gone", { skip: !linux }, async () => {
  const child = sleeper();
  const exited = exitSignal(child);
  await new Promise((r) => setTimeout(r, 50));
  const pidStart = processStart(child.pid!)!;
  await localFenceAgent().fence({ rid: 7n, address: "127.0.0.1:4000", reason: "client_reconnect", pid: child.pid!, pidStart }, 5000);
  assert.equal(await exited, "SIGKILL");
});

test("fence agents - local agent never kills a pid it did not find itself: a bare pid is refused and the process lives", async () => {
  const victim = sleeper();
  try {
    await assert.rejects(
      localFenceAgent().fence({ rid: 7n, address: "127.0.0.1:4000", reason: "client_reconnect", pid: victim.pid! }, 1000),
      /kills only a process a member found itself/,
    );
    await assert.rejects(localFenceAgent().fence({ rid: 7n, address: "127.0.0.1:4000", reason: "client_recovery" }, 1000), /kills only a process/);
    assert.equal(victim.exitCode, null);
    assert.equal(victim.signalCode, null);
    process.kill(victim.pid!, 0); // still there
  } finally {
    victim.kill("SIGKILL");
  }
});

test("fence agents - local agent: a pid now held by a later process (start token differs) is fenced without killing it", { skip: !linux }, async () => {
  const victim = sleeper();
  try {
    await new Promise((r) => setTimeout(r, 50));
    const [host, machine, boot, ticks] = processStart(victim.pid!)!.split(" ");
    const earlier = `${host} ${machine} ${boot} ${Number(ticks) - 1}`;
    await localFenceAgent().fence({ rid: 7n, address: "127.0.0.1:4000", reason: "client_recovery", pid: victim.pid!, pidStart: earlier }, 1000);
    await new Promise((r) => setTimeout(r, 50));
    process.kill(victim.pid!, 0);
    assert.equal(victim.signalCode, null, "the later process with that pid was not killed");
    // From another boot of this machine: gone since. From another machine: refused.
    await localFenceAgent().fence({ rid: 7n, address: "x", reason: "client_recovery", pid: victim.pid!, pidStart: `${host} ${machine} other-boot ${ticks}` }, 1000);
    await assert.rejects(
      localFenceAgent().fence({ rid: 7n, address: "x", reason: "client_recovery", pid: victim.pid!, pidStart: `other-host ${machine} ${boot} ${ticks}` }, 1000),
      /recorded on another machine/,
    );
    assert.equal(victim.signalCode, null);
  } finally {
    victim.kill("SIGKILL");
  }
});

test("fence agents - local agent: a process already gone is fenced; pid 1 and our own pid are refused", { skip: !linux }, async () => {
  const child = spawn(process.execPath, ["-e", "setTimeout(() => {}, 200)"], { stdio: "ignore" });
  await new Promise((r) => setTimeout(r, 50));
  const pidStart = processStart(child.pid!)!;
  await new Promise((resolve) => child.on("exit", resolve));
  await localFenceAgent().fence({ rid: 7n, address: "127.0.0.1:4000", reason: "client_recovery", pid: child.pid!, pidStart }, 1000);
  const own = processStart(process.pid)!;
  await assert.rejects(localFenceAgent().fence({ rid: 7n, address: "a", reason: "client_recovery", pid: process.pid, pidStart: own }, 1000), /this process itself/);
  await assert.rejects(localFenceAgent().fence({ rid: 7n, address: "a", reason: "client_recovery", pid: 1, pidStart: own }, 1000), /pid 1/);
});

test("fence agents - local agent cannot fence a client whose process was not found; the command agent can", () => {
  assert.match(localFenceAgent().cannotFence!(null, "another machine") ?? "", /found none \(another machine\).*--fence-command/);
  assert.equal(localFenceAgent().cannotFence!({ pid: 1234, start: "h m b 1" }), undefined);
  assert.ok(!("cannotFence" in commandFenceAgent("true")));
});

test("fence agents - command agent passes rid, address, reason and pid; exit 0 is fenced, others are errors", async () => {
  const out = join(tmpdir(), `keylock-fence-${process.pid}.txt`);
  const agent = commandFenceAgent(`echo "$KEYLOCK_FENCE_RID $KEYLOCK_FENCE_ADDRESS $KEYLOCK_FENCE_REASON $KEYLOCK_FENCE_PID $KEYLOCK_FENCE_PID_START" > ${out}`);
  await agent.fence({ rid: 0xabcn, address: "[::1]:7411", reason: "quorum_block_leader", pid: 42, pidStart: "h m b 7" }, 5000);
  assert.equal(readFileSync(out, "utf8").trim(), "0000000000000abc [::1]:7411 quorum_block_leader 42 h m b 7");
  rmSync(out);
  await assert.rejects(commandFenceAgent("echo nope >&2; exit 3").fence({ rid: 1n, address: "x", reason: "client_reconnect" }, 5000), /exited with status 3: nope/);
  await assert.rejects(commandFenceAgent("sleep 5").fence({ rid: 1n, address: "x", reason: "client_reconnect" }, 200), /did not finish within 200 ms/);
});

test("fence agents - loopback addresses", () => {
  for (const a of ["127.0.0.1:1", "[::1]:1", "[::ffff:127.0.0.1]:1", "127.8.9.10:5", "unknown"]) assert.equal(isLoopbackAddress(a), true, a);
  for (const a of ["10.0.0.1:1", "[fe80::1]:1", "192.168.1.1:80"]) assert.equal(isLoopbackAddress(a), false, a);
});
