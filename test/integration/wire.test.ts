// keylock over the wire: a real `keylock up` process and client processes on 127.0.0.1 (issue 3 §7).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { Worker, freePort, startUp, tempDir, type KeylockUp } from "../support/processes.js";
import { adminQuery } from "../../src/client/admin.js";
import { Command } from "../../src/protocol/messages.js";
import { keyFromBytes, keyToText } from "../../src/core/keys.js";

let up: KeylockUp;
let dir: { path: string; remove(): void };
const workers: Worker[] = [];

async function worker(name: string, extra: Record<string, unknown> = {}): Promise<Worker> {
  const w = new Worker();
  workers.push(w);
  await w.ok("connect", { servers: [up.address], name, ...extra });
  return w;
}

/** Two long-lived client processes shared by the tests below (each test uses its own keys). */
let a: Worker;
let b: Worker;

type StatRow = { key: string; requests: number; invalidations: number; responses: number; grants: number };
type LockRow = { key: string; mode: string; state: string; rid: string };

async function query(cmd: Command): Promise<unknown> {
  const answer = await adminQuery({ servers: [up.address] }, cmd);
  if (!Array.isArray(answer)) return answer;
  return (answer as { key: Uint8Array }[]).map((row) => ({ ...row, key: keyToText(keyFromBytes(row.key)) }));
}

async function statsFor(key: string): Promise<StatRow | undefined> {
  return ((await query(Command.ADMIN_STATS)) as StatRow[]).find((r) => r.key === key);
}

async function locksFor(prefix: string): Promise<LockRow[]> {
  return ((await query(Command.ADMIN_LOCKS)) as LockRow[]).filter((r) => r.key.startsWith(prefix));
}

/** Starts acquiring in `w` and reports whether it is still waiting after `ms`. */
async function stillWaitingAfter(promise: Promise<unknown>, ms: number): Promise<boolean> {
  const marker = Symbol("waiting");
  const result = await Promise.race([promise, new Promise((r) => setTimeout(() => r(marker), ms))]);
  return result === marker;
}

before(async () => {
  dir = tempDir("wire");
  up = await startUp(dir.path, await freePort());
  [a, b] = await Promise.all([worker("a"), worker("b")]);
});

after(async () => {
  for (const w of workers) await w.kill();
  await up.kill("SIGTERM");
  dir.remove();
});

const CONFLICTS: Record<string, Record<string, boolean>> = {
  read: { read: false, write: true, write_only: true },
  write: { read: true, write: true, write_only: true },
  write_only: { read: true, write: true, write_only: false },
};

describe("wire - every mode pair between two client processes", () => {
  for (const held of ["read", "write", "write_only"]) {
    for (const wanted of ["read", "write", "write_only"]) {
      const conflicts = CONFLICTS[held]![wanted]!;
      test(`${held} held, ${wanted} wanted: ${conflicts ? "waits for the holder" : "granted at once"}`, async () => {
        const key = `pair/${held}/${wanted}`;
        const first = await a.ok("acquire", { key, mode: held });
        const second = b.ok("acquire", { key, mode: wanted });
        if (!conflicts) {
          await b.ok("release", { handle: (await second).handle });
          await a.ok("release", { handle: first.handle });
        } else {
          assert.equal(await stillWaitingAfter(second, 300), true, "conflicting acquire must wait");
          await a.ok("release", { handle: first.handle });
          await b.ok("release", { handle: (await second).handle });
          await a.waitForEvent((e) => e.event === "invalidate" && e.key === key);
        }
      });
    }
  }
});

test("wire - write→read downgrade keeps the writer's cache: its next read needs no round trip", async () => {
  const key = "downgrade/1";
  const w = await a.ok("acquire", { key, mode: "write" });
  await a.ok("release", { handle: w.handle });
  const r = await b.ok("acquire", { key, mode: "read" });
  const inv = await a.waitForEvent((e) => e.event === "invalidate" && e.key === key);
  assert.deepEqual([inv.from, inv.to], ["write", "read"]);
  const before = await statsFor(key);
  const again = await a.ok("acquire", { key, mode: "read" });
  assert.deepEqual(await statsFor(key), before, "a cached read re-acquire sends nothing to the server");
  await a.ok("release", { handle: again.handle });
  await b.ok("release", { handle: r.handle });
});

test("wire - write_only is shared between clients and each grant carries a growing token", async () => {
  const x = await a.ok("acquire", { key: "wo/1", mode: "write_only" });
  const y = await b.ok("acquire", { key: "wo/1", mode: "write_only" });
  assert.ok(BigInt(y.writeSeq as string) > BigInt(x.writeSeq as string));
});

test("wire - read upgraded to write invalidates other readers only", async () => {
  const key = "upgrade/1";
  const ar = await a.ok("acquire", { key, mode: "read" });
  const br = await b.ok("acquire", { key, mode: "read" });
  await b.ok("release", { handle: br.handle });
  await a.ok("release", { handle: ar.handle });
  const aw = await a.ok("acquire", { key, mode: "write" });
  assert.ok(BigInt(aw.writeSeq as string) > 0n);
  const inv = await b.waitForEvent((e) => e.event === "invalidate" && e.key === key);
  assert.deepEqual([inv.from, inv.to], ["read", "null"]);
  assert.equal(a.events.filter((e) => e.event === "invalidate" && e.key === key).length, 0, "the upgrader keeps its read");
});

test("wire - nonblock: granted on a free key, EAGAIN on a held one without disturbing the holder", async () => {
  const held = await a.ok("acquire", { key: "nb/1", mode: "write", nonblock: true });
  const refused = await b.call("acquire", { key: "nb/1", mode: "read", nonblock: true });
  assert.equal(refused.code, "EAGAIN");
  assert.equal(a.events.filter((e) => e.event === "invalidate" && e.key === "nb/1").length, 0, "a refused trylock invalidates no one");
  await a.ok("release", { handle: held.handle });
});

test("wire - abort: a waiting acquire rejects with EABORTED and the key stays usable", async () => {
  const held = await a.ok("acquire", { key: "abort/1", mode: "write" });
  const aborted = await b.call("acquire", { key: "abort/1", mode: "write", abortAfterMs: 200 });
  assert.equal(aborted.code, "EABORTED");
  await a.ok("release", { handle: held.handle });
  const again = await b.ok("acquire", { key: "abort/1", mode: "write" });
  await b.ok("release", { handle: again.handle });
});

test("wire - farewell: close() removes the client and its locks from the server", async () => {
  const leaving = await worker("farewell-a");
  await leaving.ok("acquire", { key: "farewell/1", mode: "write" });
  assert.equal((await locksFor("farewell/")).length, 1);
  await leaving.ok("close");
  assert.equal((await locksFor("farewell/")).length, 0);
  const status = (await query(Command.ADMIN_STATUS)) as { clients: { name: string }[] };
  assert.equal(status.clients.filter((c) => c.name === "farewell-a").length, 0);
});

test("wire - idle-limit shrinking releases the oldest idle locks back to the server", async () => {
  const small = await worker("idle-a", { idleLockLimit: 4 });
  for (let i = 0; i < 20; i++) {
    const h = await small.ok("acquire", { key: `idle/${i}`, mode: "read" });
    await small.ok("release", { handle: h.handle });
  }
  const { cachedLocks } = await small.ok("cached");
  assert.ok((cachedLocks as number) <= 6, `cached ${String(cachedLocks)} locks with an idle limit of 4`);
  const held = await locksFor("idle/");
  assert.ok(held.length <= 6, `server still holds ${held.length} idle/ entries`);
  await small.ok("close");
});

test("wire - stats count a scripted scenario exactly", async () => {
  const key = "stats/1";
  const w = await a.ok("acquire", { key, mode: "write" }); // request 1, grant 1
  const pending = b.ok("acquire", { key, mode: "read" }); // request 2 → invalidation 1 (write→read)
  await a.ok("release", { handle: w.handle }); // response 1 → grant 2
  const r = await pending;
  await b.ok("release", { handle: r.handle });
  assert.deepEqual(await statsFor(key), { key, requests: 2, invalidations: 1, responses: 1, grants: 2 });
});

test("wire - garbage on the wire closes only that connection", async () => {
  const held = await a.ok("acquire", { key: "garbage/1", mode: "write" });
  const [host, port] = [up.address.replace(/:\d+$/, ""), Number(up.address.split(":").pop())];
  for (const junk of [Buffer.from("GET / HTTP/1.1\r\n\r\n"), Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]), Buffer.from([0, 0, 0, 3, 0xc1, 0xc1, 0xc1])]) {
    const closed = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ host, port }, () => socket.write(junk));
      socket.on("data", () => undefined);
      socket.on("close", () => resolve(true));
      socket.on("error", () => undefined);
      setTimeout(() => resolve(false), 5000).unref();
    });
    assert.equal(closed, true, `server closes a connection that sends ${junk.toString("hex")}`);
  }
  await a.ok("release", { handle: held.handle });
  const again = await b.ok("acquire", { key: "garbage/1", mode: "write" });
  await b.ok("release", { handle: again.handle });
});

test("wire - a counter guarded by write locks under contention loses no update and tokens only grow", async () => {
  const file = join(dir.path, "counter.json");
  const clients = [a, b, ...(await Promise.all([2, 3].map((i) => worker(`counter-${i}`))))];
  const perClient = 25;
  await Promise.all(clients.map((c) => c.ok("counter", { key: "counter/1", file, count: perClient }, 60_000)));
  const state = JSON.parse(readFileSync(file, "utf8")) as { value: number };
  assert.equal(state.value, clients.length * perClient);
  for (const c of clients) await c.ok("close");
});
