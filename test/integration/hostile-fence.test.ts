// Hostile peers and the local fence agent (issue 8 item 5, DESIGN §9 "Fencing"): a real `keylock up`
// server on 127.0.0.1, a victim process, and a client that greets claiming the victim's pid, then dies.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import Database from "better-sqlite3";
import { processStart } from "../../src/io/peer-process.js";
import { freePort, spawnTs, startUp, tempDir, type KeylockUp } from "../support/processes.js";

const cleanups: (() => Promise<unknown> | void)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function eventually(check: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test(
  "hostile fence - a client greeting with another process's pid and vanishing gets that process fenced, not the victim",
  { skip: process.platform !== "linux" ? "the local agent finds processes through /proc" : false },
  async () => {
    const dir = tempDir("hostile-fence");
    const port = await freePort();
    const up: KeylockUp = await startUp(dir.path, port, ["--reconnect-timeout-ms", "300"]);
    const victim = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
    cleanups.push(async () => {
      victim.kill("SIGKILL");
      await up.kill();
      dir.remove();
    });
    const hostile = spawnTs("test/integration/fixtures/hostile-greeter.ts", ["127.0.0.1", String(port), String(victim.pid), "00000000deadbeef"]);
    cleanups.push(() => hostile.kill("SIGKILL"));
    const line = await hostile.waitForLine(/"greeted":true/);
    assert.equal((JSON.parse(line) as { error: number }).error, 0, "the greeting is accepted: the server found its process");
    // The durable record names the process that owns the connection, not the one the greeting named.
    const db = new Database(join(dir.path, "keylock.db"), { readonly: true });
    const record = db.prepare("SELECT pid, pid_start FROM keylock_clients WHERE rid = '00000000deadbeef'").get() as { pid: number; pid_start: string };
    db.close();
    assert.equal(record.pid, hostile.child.pid);
    assert.equal(record.pid_start, processStart(hostile.child.pid!));
    await hostile.kill("SIGKILL");
    await eventually(() => up.output.some((l) => /reclaiming client 00000000deadbeef: fenced/.test(l)), "the hostile client to be fenced and reclaimed");
    assert.ok(alive(victim.pid!), "the process the hostile client named is alive");
    assert.equal(victim.exitCode, null);
    assert.equal(victim.signalCode, null);
    assert.ok(
      up.output.some((l) => /fencing client 00000000deadbeef .*client_reconnect/.test(l)),
      up.output.join("\n"),
    );
    assert.equal(up.output.filter((l) => /serving on/.test(l)).length, 1, "the server kept serving (the fence did not fail)");
  },
);

test(
  "hostile fence - a greeting whose connection the server cannot attribute is refused, and the server never stops",
  { skip: process.platform !== "linux" ? "the local agent finds processes through /proc" : false },
  async () => {
    const dir = tempDir("hostile-close");
    const port = await freePort();
    const up: KeylockUp = await startUp(dir.path, port, ["--reconnect-timeout-ms", "300", "--recovery-timeout-ms", "300"]);
    cleanups.push(async () => {
      await up.kill();
      dir.remove();
    });
    // Each greets claiming pid 1, then closes its socket before the server can look: no process owns the
    // connection any more. Recorded, such a client could never be fenced and would stop every server.
    const rids = ["00000000000000a1", "00000000000000a2", "00000000000000a3"];
    for (const rid of rids) {
      const hostile = spawnTs("test/integration/fixtures/hostile-greeter.ts", ["127.0.0.1", String(port), "1", rid, "close"]);
      cleanups.push(() => hostile.kill("SIGKILL"));
    }
    const refused = (rid: string): boolean =>
      up.output.some((l) => l.includes(`refused greeting from`) && l.includes(`(${rid}): the local fence agent kills only a process it found`));
    await eventually(() => rids.every(refused), `every greeting to be refused:\n${up.output.join("\n")}`);
    await new Promise((r) => setTimeout(r, 1000)); // past the reconnect and recovery timeouts
    assert.equal(up.output.filter((l) => /serving on/.test(l)).length, 1, `the server never stopped:\n${up.output.join("\n")}`);
    const db = new Database(join(dir.path, "keylock.db"), { readonly: true });
    const left = db.prepare("SELECT rid FROM keylock_clients").all();
    db.close();
    assert.deepEqual(left, [], "nothing was recorded for them");
  },
);
