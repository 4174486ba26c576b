// Surviving a server restart (issue 4 §8): real `keylock up` processes SIGKILLed and restarted on the same
// store, real client processes, all on 127.0.0.1.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { Worker, freePort, startUp, tempDir, type KeylockUp } from "../support/processes.js";
import { adminQuery } from "../../src/client/admin.js";
import { Command } from "../../src/protocol/messages.js";
import { keyFromBytes, keyToText } from "../../src/core/keys.js";

const cleanups: (() => Promise<unknown> | void)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function cluster(extra: string[] = []) {
  const dir = tempDir("restart");
  const port = await freePort();
  let up: KeylockUp = await startUp(dir.path, port, extra);
  const workers: Worker[] = [];
  cleanups.push(async () => {
    for (const w of workers) await w.kill();
    await up.kill();
    dir.remove();
  });
  return {
    get up() {
      return up;
    },
    servers: [`127.0.0.1:${port}`],
    async worker(name: string, options: Record<string, unknown> = {}) {
      const w = new Worker();
      workers.push(w);
      await w.ok("connect", { servers: [`127.0.0.1:${port}`], name, ...options });
      return w;
    },
    async crash() {
      await up.kill("SIGKILL");
    },
    async restart(more: string[] = extra) {
      up = await startUp(dir.path, port, more);
    },
    async locks(prefix: string) {
      const rows = (await adminQuery({ servers: [`127.0.0.1:${port}`] }, Command.ADMIN_LOCKS)) as {
        key: Uint8Array;
        mode: string;
        state: string;
        rid: string;
      }[];
      return rows.map((r) => ({ ...r, key: keyToText(keyFromBytes(r.key)) })).filter((r) => r.key.startsWith(prefix));
    },
    async status() {
      return (await adminQuery({ servers: [`127.0.0.1:${port}`] }, Command.ADMIN_STATUS)) as {
        term: bigint;
        recovering: boolean;
        clients: { rid: string; name: string }[];
        fences: { rid: string; reason: string; state: string }[];
      };
    },
  };
}

async function eventually(check: () => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test("restart - a SIGKILLed server comes back honouring every lock its clients still hold", async () => {
  const c = await cluster();
  const a = await c.worker("holder");
  const b = await c.worker("waiter");
  const held = await a.ok("acquire", { key: "r/1", mode: "write" });
  const read = await b.ok("acquire", { key: "r/2", mode: "read" });
  const termBefore = (await c.status()).term;
  await c.crash();
  await c.restart();
  await a.waitForEvent((e) => e.event === "recovered");
  await b.waitForEvent((e) => e.event === "recovered");
  const status = await c.status();
  assert.ok(status.term > termBefore, "a restarted server has a greater term (B22)");
  assert.deepEqual(
    (await c.locks("r/")).map((r) => [r.key, r.mode, r.state]),
    [
      ["r/1", "write", "granted"],
      ["r/2", "read", "granted"],
    ],
  );
  // The recovered write still excludes others until released, and the next token is larger.
  await b.ok("acquireLater", { key: "r/1", mode: "write", tag: "w" });
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(b.events.filter((e) => e.event === "acquired" && e.tag === "w").length, 0, "the recovered write lock is honoured");
  await a.ok("release", { handle: held.handle });
  const granted = await b.waitForEvent((e) => e.event === "acquired" && e.tag === "w");
  assert.ok(BigInt(granted.writeSeq as string) > BigInt(held.writeSeq as string), "tokens never go backwards across a restart");
  await b.ok("release", { handle: read.handle });
});

test("restart - a SIGKILLed client holding a write lock is fenced and reclaimed; the waiter gets the lock", async () => {
  const c = await cluster(["--reconnect-timeout-ms", "300"]);
  const a = await c.worker("doomed");
  const b = await c.worker("waiter");
  await a.ok("acquire", { key: "k/1", mode: "write" });
  await b.ok("acquireLater", { key: "k/1", mode: "write", tag: "w" });
  await a.kill("SIGKILL");
  const granted = await b.waitForEvent((e) => e.event === "acquired" && e.tag === "w", 15_000);
  assert.equal(granted.error, undefined);
  const status = await c.status();
  assert.deepEqual(status.clients.map((x) => x.name), ["waiter"]);
});

test("restart - clients gone for good are fenced after the recovery timeout and their locks reclaimed", async () => {
  const c = await cluster(["--recovery-timeout-ms", "500"]);
  const a = await c.worker("gone");
  await a.ok("acquire", { key: "g/1", mode: "write" });
  await a.kill("SIGKILL");
  await c.crash();
  await c.restart();
  assert.equal((await c.status()).recovering, true, "the new server waits for the recorded client");
  const b = await c.worker("newcomer");
  const h = await b.ok("acquire", { key: "g/1", mode: "write" }, 15_000);
  assert.ok(BigInt(h.writeSeq as string) > 0n);
  const status = await c.status();
  assert.equal(status.recovering, false);
  assert.deepEqual(status.clients.map((x) => x.name), ["newcomer"]);
});

test("restart - a farewell during recovery waits for that client's recovery, then is answered", async () => {
  const c = await cluster();
  const a = await c.worker("leaving");
  const other = await c.worker("staying");
  await a.ok("acquire", { key: "f/1", mode: "write" });
  await other.ok("acquire", { key: "f/2", mode: "read" });
  await c.crash();
  await c.restart();
  await a.ok("close", {}, 20_000);
  await other.waitForEvent((e) => e.event === "recovered");
  await eventually(async () => (await c.status()).clients.every((x) => x.name !== "leaving"), "the leaving client to be gone");
  assert.deepEqual((await c.locks("f/")).map((r) => r.key), ["f/2"]);
});

test("restart - tokens keep growing across repeated restarts, with and without surviving clients", async () => {
  const c = await cluster(["--recovery-timeout-ms", "500"]);
  let last = 0n;
  const survivor = await c.worker("survivor");
  for (let round = 0; round < 3; round++) {
    const w = await c.worker(`round-${round}`);
    const h = await w.ok("acquire", { key: "t/1", mode: "write" }, 15_000);
    const token = BigInt(h.writeSeq as string);
    assert.ok(token > last, `round ${round}: token ${token} > ${last}`);
    last = token;
    await w.ok("release", { handle: h.handle });
    const s = await survivor.ok("acquire", { key: `t/s${round}`, mode: "write" }, 15_000);
    assert.ok(BigInt(s.writeSeq as string) > last);
    last = BigInt(s.writeSeq as string);
    if (round === 1) await w.kill("SIGKILL"); // gone for good: fenced after the recovery timeout
    await c.crash();
    await c.restart();
  }
  const w = await c.worker("final");
  const h = await w.ok("acquire", { key: "t/1", mode: "write" }, 15_000);
  assert.ok(BigInt(h.writeSeq as string) > last);
});

test("restart - a fenced client learns it: handles invalid, acquires reject EFENCED, a 'fenced' event", async () => {
  const c = await cluster(["--recovery-timeout-ms", "500", "--fence-command", "true"]);
  const a = await c.worker("sleeper");
  const h = await a.ok("acquire", { key: "x/1", mode: "write" });
  a.proc.child.kill("SIGSTOP");
  cleanups.push(() => void a.proc.child.kill("SIGCONT"));
  await c.crash();
  await c.restart();
  const b = await c.worker("other");
  await b.ok("acquire", { key: "x/1", mode: "write" }, 15_000); // a was fenced (by `true`) and reclaimed
  a.proc.child.kill("SIGCONT");
  await a.waitForEvent((e) => e.event === "fenced", 15_000);
  assert.equal((await a.ok("valid", { handle: h.handle })).valid, false);
  const refused = await a.call("acquire", { key: "x/2", mode: "read" });
  assert.equal(refused.code, "EFENCED");
});

test("restart - a fence that fails stops the lock server with a log line, and a later start retries the fence", async () => {
  const c = await cluster(["--reconnect-timeout-ms", "300", "--recovery-timeout-ms", "500", "--fence-command", "exit 7"]);
  const a = await c.worker("unfenceable");
  await a.ok("acquire", { key: "ff/1", mode: "write" });
  await a.kill("SIGKILL");
  // The reconnect timeout fences it; the command fails; the server stops and the member serves again in a
  // new term, whose recovery times out on the same client and fences it again (and fails again).
  const stops = (): string[] => c.up.output.filter((l) => /stopping the lock server: .*exited with status 7/.test(l));
  await eventually(() => Promise.resolve(stops().length >= 2), "a failed fence to stop the server, and a later start to retry it");
  const fences = c.up.output.filter((l) => /fencing client .* \((client_reconnect|client_recovery)\)/.test(l));
  assert.ok(fences.some((l) => l.includes("client_reconnect")) && fences.some((l) => l.includes("client_recovery")), fences.join("\n"));
});
