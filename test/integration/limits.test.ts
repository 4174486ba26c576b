// Server limits (DESIGN §9 "Limits", core/limits.ts), each shown with real sockets on 127.0.0.1 against a
// real lock server (in-process `startEmbedded`, or a `keylock up` process for the CLI flags): connections
// per member, the greeting deadline (leader and ENOTLEADER paths), requests in flight and lock entries per
// client, the invalidation deadline, and a status answer that fits a frame with thousands of clients.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { connect } from "../../src/index.js";
import { startEmbedded, type Embedded } from "../../src/runtime/embedded.js";
import type { ServerLimits } from "../../src/core/limits.js";
import { STATUS_CLIENTS_MAX } from "../../src/core/limits.js";
import { FramedConnection, connectTcp } from "../../src/io/tcp.js";
import { answerNotLeader, listenTcp } from "../../src/runtime/listener.js";
import { adminQuery } from "../../src/client/admin.js";
import { LockServerRuntime } from "../../src/runtime/server.js";
import { MemoryStore } from "../../src/store/memory.js";
import { commandFenceAgent } from "../../src/io/fence.js";
import { keyFromBytes, keyFromText, keyToText, ridToHex } from "../../src/core/keys.js";
import { Command, WireError, type Message } from "../../src/protocol/messages.js";
import type { LockMode } from "../../src/core/modes.js";
import { Worker, freePort, startUp, tempDir, type KeylockUp } from "../support/processes.js";
import { RawIdentity, rawGreet } from "../support/greet.js";
import { GreetingExchange } from "../../src/client/handshake.js";

const cleanups: (() => Promise<unknown> | void)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function embedded(limits: Partial<ServerLimits>, log: (line: string) => void = () => undefined): Promise<Embedded & { port: number }> {
  const dir = tempDir("limits");
  const port = await freePort();
  // The fence command `true` fences nobody: raw test clients greet with made-up pids.
  const server = await startEmbedded({ dir: dir.path, host: "127.0.0.1", port, reconnectTimeoutMs: 20_000, fenceCommand: "true", log, limits });
  cleanups.push(async () => {
    await server.stop();
    dir.remove();
  });
  return Object.assign(server, { port });
}

async function up(extra: string[]): Promise<KeylockUp> {
  const dir = tempDir("limits-up");
  const proc = await startUp(dir.path, await freePort(), extra);
  cleanups.push(async () => {
    await proc.kill("SIGTERM");
    dir.remove();
  });
  return proc;
}

async function metric(server: Embedded, name: string): Promise<number> {
  const value = await server.member.metrics.value(name);
  assert.ok(value !== undefined, `metric ${name}`);
  return value;
}

/** A plain TCP socket that never sends a byte; `closed` resolves when the server closes it. */
async function idleSocket(port: number): Promise<{ socket: net.Socket; closed: Promise<void>; isClosed: () => boolean }> {
  const socket = net.connect({ host: "127.0.0.1", port });
  let isClosed = false;
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  void closed.then(() => (isClosed = true));
  socket.on("error", () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  cleanups.push(() => {
    socket.destroy();
  });
  return { socket, closed, isClosed: () => isClosed };
}

async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function eventually(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A hand-driven client: greets as `rid`, then sends lock requests; records what comes back. */
async function rawClient(port: number, rid: bigint, name = "raw", identity = new RawIdentity(rid)) {
  const connection = new FramedConnection(await connectTcp("127.0.0.1", port, 2000));
  const received: Message[] = [];
  const greetingPhase: Message[] = [];
  let answered: () => void = () => undefined;
  const closed = new Promise<void>((resolve) =>
    connection.start({
      onMessage: (m) => {
        if (m.header.cmd === Command.HELLO || m.header.cmd === Command.GREETING) greetingPhase.push(m);
        else received.push(m);
        answered();
      },
      onClose: () => {
        answered();
        resolve();
      },
    }),
  );
  cleanups.push(() => connection.destroy("test over"));
  const nextAnswer = async (): Promise<Message> => {
    while (greetingPhase.length === 0) {
      if (connection.isClosed) throw new Error("closed during the greeting");
      await within(new Promise<void>((resolve) => (answered = resolve)), 10_000, "the greeting answer");
    }
    return greetingPhase.shift()!;
  };
  const answer = await rawGreet((m) => connection.send(m), nextAnswer, identity, { name, pid: 1 });
  assert.equal(answer.header.error, WireError.NONE, `greeting of ${ridToHex(rid)} answered`);
  let seq = 0;
  return {
    connection,
    received,
    closed,
    lock(key: string, newMode: LockMode): void {
      seq++;
      connection.send({
        header: { seq, ack: 0, id: 100 + seq, cmd: Command.LOCK, response: false, error: WireError.NONE },
        payload: {
          kind: "lock",
          body: {
            key: keyFromText(key),
            oldMode: "null",
            newMode,
            writeSeq: 0n,
            noQueue: false,
            grantTerm: 0n,
            grantNo: 0,
            grantTag: 0,
          },
        },
      });
    },
    /** Lock answers (grants) received so far. */
    grants(): number {
      return received.filter((m) => m.header.cmd === Command.LOCK && m.header.response && m.header.error === WireError.NONE).length;
    },
  };
}

type LockRow = { key: string; mode: string; state: string; rid: string };

async function locks(address: string, prefix: string): Promise<LockRow[]> {
  const rows = (await adminQuery({ servers: [address] }, Command.ADMIN_LOCKS)) as (Omit<LockRow, "key"> & { key: Uint8Array })[];
  return rows.map((r) => ({ ...r, key: keyToText(keyFromBytes(r.key)) })).filter((r) => r.key.startsWith(prefix));
}

test("limits - a connection that never greets is closed at the greeting deadline and counted; greeted ones stay", async () => {
  const server = await embedded({ greetingTimeoutMs: 200 });
  const idle = await idleSocket(server.port);
  const client = await connect({ servers: [server.address] });
  await within(idle.closed, 5000, "the idle socket to be closed");
  assert.ok((await metric(server, "keylock_greeting_timeouts_total")) >= 1);
  await new Promise((r) => setTimeout(r, 400)); // well past the deadline: the greeted client is untouched
  const lock = await client.acquire("greet/1", "write");
  lock.release();
  assert.ok(Array.isArray(await adminQuery({ servers: [server.address] }, Command.ADMIN_LOCKS)));
  await client.close();
});

test("limits - a thousand idle sockets do not stop an honest client, and all are closed at the deadline (keylock up --greeting-timeout-ms)", async () => {
  const proc = await up(["--greeting-timeout-ms", "3000"]);
  const port = Number(proc.address.split(":").pop());
  const idle: Awaited<ReturnType<typeof idleSocket>>[] = [];
  for (let i = 0; i < 1000; i += 100) idle.push(...(await Promise.all(Array.from({ length: 100 }, () => idleSocket(port)))));
  const client = await connect({ servers: [proc.address], connectTimeoutMs: 10_000 });
  const lock = await client.acquire("idle/1", "write");
  assert.ok(lock.writeSeq > 0n);
  lock.release();
  await client.close();
  await within(Promise.all(idle.map((s) => s.closed)), 30_000, "every idle socket to be closed");
  assert.ok(proc.child.exitCode === null, "the server is still running");
  // A flood is logged at most once a second, not once per socket.
  const lines = proc.output.filter((l) => /no greeting within/.test(l));
  assert.ok(lines.length >= 1 && lines.length <= 30, `${lines.length} log lines for 1000 idle sockets`);
});

test("limits - beyond --max-connections new sockets are closed at once, and the open ones keep working", async () => {
  const proc = await up(["--max-connections", "20", "--greeting-timeout-ms", "600000"]);
  const port = Number(proc.address.split(":").pop());
  const honest = await connect({ servers: [proc.address], connectTimeoutMs: 10_000 });
  const held = await honest.acquire("max/1", "write");
  const sockets: Awaited<ReturnType<typeof idleSocket>>[] = [];
  for (let i = 0; i < 30; i++) sockets.push(await idleSocket(port));
  // 20 connections at most: the honest client's and 19 idle ones; the other 11 are closed at once.
  await eventually(() => sockets.filter((s) => s.isClosed()).length >= 11, "11 sockets over the limit to be closed", 10_000);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(sockets.filter((s) => s.isClosed()).length, 11);
  assert.deepEqual(
    sockets.map((s) => s.isClosed()),
    [...Array<boolean>(19).fill(false), ...Array<boolean>(11).fill(true)],
    "the first 19 stay open; those over the limit are closed",
  );
  held.release();
  const again = await honest.acquire("max/1", "read"); // the honest connection keeps working
  again.release();
  const refusedLines = proc.output.filter((l) => /refused a connection/.test(l));
  assert.ok(refusedLines.length >= 1 && refusedLines.length <= 3, `logged at most once a second: ${refusedLines.length} lines`);
  for (const s of sockets) s.socket.destroy();
  await eventually(async () => {
    const other = await connect({ servers: [proc.address], connectTimeoutMs: 2000 }).catch(() => null);
    if (other === null) return false;
    (await other.acquire("max/2", "write")).release();
    await other.close();
    return true;
  }, "a new client to be served once connections were freed");
  await honest.close();
});

test("limits - a follower's ENOTLEADER path closes sockets that never greet and holds at most connectionsMax", async () => {
  const lines: string[] = [];
  const listener = await listenTcp("127.0.0.1", 0, (socket) => answerNotLeader(socket, { slot: 1, address: "127.0.0.1:1" }, 200), {
    connectionsMax: 3,
    log: (line) => lines.push(line),
  });
  cleanups.push(() => listener.close());
  const sockets: Awaited<ReturnType<typeof idleSocket>>[] = [];
  for (let i = 0; i < 5; i++) sockets.push(await idleSocket(listener.port));
  await within(Promise.all(sockets.map((s) => s.closed)), 5000, "every socket to be closed (over the limit at once, the rest at the deadline)");
  assert.equal(listener.refusedConnections, 2);
  assert.ok(lines.length >= 1 && lines.every((l) => /refused a connection/.test(l)), lines.join("\n"));
  // One that greets is answered ENOTLEADER naming the leader, as before.
  const connection = new FramedConnection(await connectTcp("127.0.0.1", listener.port, 2000));
  const answer = await new Promise<Message>((resolve) => {
    connection.start({ onMessage: resolve, onClose: () => undefined });
    connection.send(new GreetingExchange("follower", { rid: 9n, name: "x", pid: 1, lastServerTerm: 0n, farewell: false, admin: false, secret: undefined, clusterId: "", resume: null, claim: null }).hello());
  });
  assert.equal(answer.header.error, WireError.ENOTLEADER);
  connection.destroy("done");
});

test("limits - a lock request beyond the requests in flight per client closes that client's connection; the table is unchanged", async () => {
  const log: string[] = [];
  const server = await embedded({ clientRequestsMax: 2 }, (line) => log.push(line));
  const holder = await connect({ servers: [server.address] });
  const held = await Promise.all(["req/1", "req/2", "req/3"].map((k) => holder.acquire(k, "write")));
  const rid = 0x7100n;
  const raw = await rawClient(server.port, rid);
  raw.lock("req/1", "write");
  raw.lock("req/2", "write");
  await eventually(async () => (await locks(server.address, "req/")).filter((r) => r.state === "requested").length === 2, "two queued requests");
  raw.lock("req/3", "write");
  await within(raw.closed, 5000, "the over-limit client's connection to close");
  assert.ok(log.some((l) => /protocol error: client 0000000000007100 .* more than 2 lock requests in flight/.test(l)), log.join("\n"));
  const rows = await locks(server.address, "req/");
  assert.deepEqual(
    rows.filter((r) => r.rid === ridToHex(rid)).map((r) => [r.key, r.state]),
    [
      ["req/1", "requested"],
      ["req/2", "requested"],
    ],
    "the refused request left nothing in the table",
  );
  assert.equal(await metric(server, "keylock_client_limit_violations_total"), 1);
  for (const h of held) h.release();
  const again = await holder.acquire("req/3", "write"); // the server and the honest client carry on
  again.release();
  await holder.close();
});

test("limits - a lock request beyond the lock entries per client is a protocol error; requests on keys it holds still pass", async () => {
  const log: string[] = [];
  const server = await embedded({ clientLocksMax: 3 }, (line) => log.push(line));
  const rid = 0x7200n;
  const raw = await rawClient(server.port, rid);
  for (const key of ["ent/a", "ent/b", "ent/c"]) raw.lock(key, "read");
  await eventually(() => raw.grants() === 3, "three read grants");
  raw.lock("ent/a", "read"); // a key it already holds: no new entry, admitted
  await eventually(() => raw.grants() === 4, "the request on a held key to be granted");
  raw.lock("ent/d", "read");
  await within(raw.closed, 5000, "the over-limit client's connection to close");
  assert.ok(log.some((l) => /protocol error: client 0000000000007200 .* more than 3 lock entries/.test(l)), log.join("\n"));
  assert.deepEqual(
    (await locks(server.address, "ent/")).map((r) => [r.key, r.mode, r.state, r.rid]),
    ["ent/a", "ent/b", "ent/c"].map((k) => [k, "read", "granted", ridToHex(rid)]),
  );
  assert.equal(await metric(server, "keylock_client_limit_violations_total"), 1);
  const other = await connect({ servers: [server.address] });
  (await other.acquire("ent/d", "write")).release();
  await other.close();
});

test("limits - a client that does not answer an invalidation in time is fenced and reclaimed; the waiter gets the key", async () => {
  const proc = await up(["--invalidation-timeout-ms", "500", "--fence-command", "true"]);
  const stuck = new Worker();
  const waiter = new Worker();
  cleanups.push(() => stuck.kill(), () => waiter.kill());
  await stuck.ok("connect", { servers: [proc.address], name: "stuck", invalidateDelayMs: 600_000 });
  await waiter.ok("connect", { servers: [proc.address], name: "waiter" });
  const held = await stuck.ok("acquire", { key: "inv/1", mode: "write" });
  await stuck.ok("release", { handle: held.handle }); // cached: the server still counts it as held
  await waiter.ok("acquireLater", { key: "inv/1", mode: "write", tag: "w" });
  await stuck.waitForEvent((e) => e.event === "invalidate");
  const granted = await waiter.waitForEvent((e) => e.event === "acquired" && e.tag === "w", 20_000);
  assert.equal(granted.error, undefined, JSON.stringify(granted));
  assert.ok(BigInt(granted.writeSeq as string) > BigInt(held.writeSeq as string));
  assert.ok(proc.output.some((l) => /has not answered the invalidation .* treating it as vanished/.test(l)), proc.output.join("\n"));
  assert.ok(proc.output.some((l) => /fencing client .* \(client_reconnect\)/.test(l)));
  await stuck.waitForEvent((e) => e.event === "fenced", 20_000);
});

test("limits - status with thousands of clients fits a frame: the lowest rids, and clientsTotal", async () => {
  // A real LockServerRuntime on a memory store (thousands of greetings, no disk), behind a real listener.
  const store = new MemoryStore();
  const config = { clusterId: "limits", slots: [{ slot: 0, host: "127.0.0.1", port: 1 }], secretDigest: null, formattedAtMs: 0 };
  await store.format(config);
  const server = await LockServerRuntime.start({
    store,
    config,
    slot: 0,
    term: 1n,
    host: "127.0.0.1",
    port: 1,
    fenceAgent: commandFenceAgent("true"),
    log: () => undefined,
    // Greeting v2 costs a few ms of signing per fresh client here: no fencing storm of the 4000
    // disconnected sessions while the test still greets.
    reconnectTimeoutMs: 600_000,
  });
  const listener = await listenTcp("127.0.0.1", 0, (socket) => server.accept(socket));
  cleanups.push(async () => {
    await server.stop();
    await listener.close();
  });
  const name = "n".repeat(256);
  const total = 4000; // about 1.3 MB of client rows: more than a frame holds
  for (let i = 0; i < total; i += 200) {
    const batch = await Promise.all(Array.from({ length: 200 }, (_, j) => rawClient(listener.port, 0x10000n + BigInt(total - (i + j)), name)));
    for (const raw of batch) raw.connection.destroy("greeted; the session stays for its reconnect timeout");
  }
  const status = (await adminQuery({ servers: [listener.address] }, Command.ADMIN_STATUS)) as {
    clients: { rid: string; name: string }[];
    clientsTotal: number;
  };
  assert.equal(status.clientsTotal, total);
  assert.equal(status.clients.length, STATUS_CLIENTS_MAX);
  assert.deepEqual(
    status.clients.slice(0, 3).map((c) => c.rid),
    [1n, 2n, 3n].map((n) => ridToHex(0x10000n + n)),
    "the lowest rids first",
  );
});

test("limits - a recovery report beyond the lock entries per client closes that client's connection and adds nothing", async () => {
  const store = new MemoryStore();
  const config = { clusterId: "limits", slots: [{ slot: 0, host: "127.0.0.1", port: 1 }], secretDigest: null, formattedAtMs: 0 };
  await store.format(config);
  const rid = 0x7300n;
  const identity = new RawIdentity(rid); // the record's claim key is this client's (greeting v2)
  const claimKey = identity.claim.publicKey.toString("hex");
  await store.insertClient({ rid, name: "recovering", address: "127.0.0.1:9", pid: 0, pidStart: "", hostname: "h", greetedAtMs: 0, resumeKey: "", claimKey });
  const log: string[] = [];
  const server = await LockServerRuntime.start({
    store,
    config,
    slot: 0,
    term: 2n,
    host: "127.0.0.1",
    port: 1,
    fenceAgent: commandFenceAgent("true"),
    log: (line) => log.push(line),
    limits: { clientLocksMax: 3 },
    recoveryTimeoutMs: 60_000,
  });
  const listener = await listenTcp("127.0.0.1", 0, (socket) => server.accept(socket));
  cleanups.push(async () => {
    await server.stop();
    await listener.close();
  });
  const raw = await rawClient(listener.port, rid, "recovering", identity);
  await eventually(() => raw.received.some((m) => m.header.cmd === Command.LOCK_RECOVER), "the recovery request");
  const ask = raw.received.find((m) => m.header.cmd === Command.LOCK_RECOVER)!;
  raw.connection.send({
    header: { seq: 1, ack: ask.header.seq, id: ask.header.id, cmd: Command.LOCK_RECOVER, response: true, error: WireError.NONE },
    payload: {
      kind: "recover-response",
      body: {
        locks: ["r/1", "r/2", "r/3", "r/4"].map((k) => ({
          key: keyFromText(k),
          mode: "read" as const,
          writeSeq: 0n,
          grantTerm: 0n,
          grantNo: 0,
          grantTag: 0,
        })),
      },
    },
  });
  await within(raw.closed, 5000, "the over-limit client's connection to close");
  assert.ok(log.some((l) => /protocol error: client 0000000000007300 .* reported 4 locks in recovery \(at most 3 per client\)/.test(l)), log.join("\n"));
  assert.deepEqual(server.lockTable, { keys: 0, entries: 0 }, "nothing of the refused batch is in the table");
});

