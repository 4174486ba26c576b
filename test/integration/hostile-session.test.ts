// Hostile peers against the real lock server runtime (issue 8, DESIGN §9): a raw client on 127.0.0.1
// sends frames an honest client never sends (forged acks, reused request ids, lying recovery reports,
// messages it never acknowledges); the server closes that connection with a counted protocol error,
// treats the client as vanished (fence → reclaim) and keeps serving everyone else. Also the reclaim
// order (server.ts reclaim): record deleted first, entries only then, no re-greeting meanwhile.
import { test } from "node:test";
import assert from "node:assert/strict";
import type net from "node:net";
import { LockServerRuntime, type ServerOptions } from "../../src/runtime/server.js";
import { listenTcp, type ServiceListener } from "../../src/runtime/listener.js";
import { MemoryDatabase, MemoryStore } from "../../src/store/memory.js";
import type { FenceAgent, FenceTarget } from "../../src/io/fence.js";
import { FramedConnection, connectTcp } from "../../src/io/tcp.js";
import { Command, WireError, type Body, type Message } from "../../src/protocol/messages.js";
import { keyFromText } from "../../src/core/keys.js";
import { connect } from "../../src/client/client.js";
import { RawIdentity, rawGreet } from "../support/greet.js";

const TERM = 5n;

interface Harness {
  server: LockServerRuntime;
  address: string;
  port: number;
  db: MemoryDatabase;
  fenced: FenceTarget[];
  logs: string[];
  fatal: string[];
  stop(): Promise<void>;
}

async function startServer(
  options: Partial<ServerOptions> & { db?: MemoryDatabase; makeStore?: (db: MemoryDatabase) => MemoryStore } = {},
): Promise<Harness> {
  if (options.db === undefined) identities.clear(); // a new cluster: the test's clients start fresh
  const db = options.db ?? new MemoryDatabase();
  const { db: _db, makeStore, ...serverOptions } = options;
  const store = makeStore?.(db) ?? new MemoryStore(db);
  const fenced: FenceTarget[] = [];
  const logs: string[] = [];
  const fatal: string[] = [];
  let server: LockServerRuntime | null = null;
  const pending: net.Socket[] = [];
  const listener: ServiceListener = await listenTcp("127.0.0.1", 0, (socket) => {
    if (server) server.accept(socket);
    else pending.push(socket);
  });
  if (db.config === null) {
    await store.format({ clusterId: "hostile", slots: [{ slot: 0, host: "127.0.0.1", port: listener.port }], secretDigest: null, formattedAtMs: 1 });
  }
  const agent: FenceAgent = {
    name: "test",
    fence: (target) => {
      fenced.push(target);
      return Promise.resolve();
    },
  };
  server = await LockServerRuntime.start({
    store,
    config: db.config!,
    slot: 0,
    term: TERM,
    host: "127.0.0.1",
    port: listener.port,
    reconnectTimeoutMs: 300,
    recoveryTimeoutMs: 600,
    fenceAgent: agent,
    log: (line) => logs.push(line),
    onFatal: (reason) => fatal.push(reason),
    ...serverOptions,
  });
  for (const socket of pending.splice(0)) server.accept(socket);
  const running = server;
  return {
    server: running,
    address: listener.address,
    port: listener.port,
    db,
    fenced,
    logs,
    fatal,
    stop: async () => {
      await running.stop();
      await listener.close();
      await store.close();
    },
  };
}

/** The test's clients, one identity per rid (greeting v2: a rid's resumption secret stays with it). */
const identities = new Map<bigint, RawIdentity>();
function identityOf(rid: bigint): RawIdentity {
  let identity = identities.get(rid);
  if (identity === undefined) identities.set(rid, (identity = new RawIdentity(rid)));
  return identity;
}

/** A hand-driven client: sends exactly the frames the test writes, records everything it gets. */
class RawClient {
  readonly received: Message[] = [];
  readonly closed: Promise<string>;
  private waiters: (() => void)[] = [];
  private constructor(readonly connection: FramedConnection) {
    let onClosed: (reason: string) => void = () => undefined;
    this.closed = new Promise((resolve) => (onClosed = resolve));
    connection.start({
      onMessage: (message) => {
        this.received.push(message);
        for (const wake of this.waiters.splice(0)) wake();
      },
      onClose: (reason) => {
        onClosed(reason);
        for (const wake of this.waiters.splice(0)) wake();
      },
    });
  }

  static async open(port: number): Promise<RawClient> {
    return new RawClient(new FramedConnection(await connectTcp("127.0.0.1", port, 2000)));
  }

  /** Greets and waits for the answer; returns its wire error. */
  async greet(rid: bigint, fields: { lastServerTerm?: bigint; farewell?: boolean } = {}): Promise<WireError> {
    let phase: Command = Command.HELLO;
    const answer = await rawGreet(
      (message) => {
        phase = message.header.cmd;
        this.connection.send(message);
      },
      () => this.next((m) => m.header.cmd === phase && m.header.response),
      identityOf(rid),
      fields,
    );
    return answer.header.error;
  }

  send(header: Partial<Message["header"]> & { seq: number; id: number; cmd: Command }, payload: Body): void {
    this.connection.send({ header: { ack: 0, response: false, error: WireError.NONE, ...header }, payload });
  }

  lock(seq: number, id: number, key: string, ack = 0): void {
    this.send(
      { seq, ack, id, cmd: Command.LOCK },
      {
        kind: "lock",
        body: {
          key: keyFromText(key),
          oldMode: "null",
          newMode: "write",
          writeSeq: 0n,
          noQueue: false,
          grantTerm: 0n,
          grantNo: 0,
          grantTag: 0,
        },
      },
    );
  }

  /** The first received message matching `pick` (waits for it; rejects if the connection closes first). */
  async next(pick: (message: Message) => boolean, timeoutMs = 3000): Promise<Message> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.received.find(pick);
      if (found) return found;
      if (this.connection.isClosed) throw new Error("connection closed before the expected message");
      if (Date.now() > deadline) throw new Error("timed out waiting for a message");
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  close(): void {
    this.connection.destroy("test done");
  }
}

/** The server logged a protocol error matching `pattern` (the peer only sees its connection close). */
function assertLogged(h: Harness, pattern: RegExp): void {
  assert.ok(
    h.logs.some((line) => line.startsWith("protocol error from") && pattern.test(line)),
    `no protocol error matching ${pattern} in:\n${h.logs.join("\n")}`,
  );
}

function metric(server: LockServerRuntime, name: string): Promise<number | undefined> {
  return server.metrics.value(name);
}

async function until(what: string, condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A real client takes and releases a write lock: the server still serves. */
async function honestClientWorks(address: string, key: string): Promise<void> {
  const client = await connect({ servers: [address], connectTimeoutMs: 3000 });
  try {
    const handle = await client.acquire(key, "write");
    assert.ok(handle.writeSeq > 0n && handle.writeSeq < 1n << 62n);
    handle.release();
  } finally {
    await client.close();
  }
}

test("hostile session - a LOCK whose ack claims 2^53-2 closes only that connection, counted; the server keeps serving", async () => {
  const h = await startServer();
  try {
    const raw = await RawClient.open(h.port);
    assert.equal(await raw.greet(0x51n), WireError.NONE);
    // Issue 8 item 1: before the fix the session adopted the ack and the next grant killed the server.
    raw.lock(1, 1, "forged/1", 2 ** 53 - 2);
    raw.lock(2, 2, "forged/2", 2 ** 53 - 2);
    await raw.closed;
    assertLogged(h, /ack 9007199254740990 acknowledges seqs never sent/);
    assert.equal(await metric(h.server, "keylock_protocol_errors_total"), 1);
    assert.deepEqual(h.fatal, []);
    assert.equal(h.server.lockTable.entries, 0, "the refused request changed nothing");
    await honestClientWorks(h.address, "forged/1");
  } finally {
    await h.stop();
  }
});

test("hostile session - a request id reused while still queued, or two FAREWELLs with one id, close only that connection", async () => {
  const h = await startServer();
  try {
    const holder = await connect({ servers: [h.address] });
    const held = await holder.acquire("reuse/1", "write");
    const raw = await RawClient.open(h.port);
    assert.equal(await raw.greet(0x52n), WireError.NONE);
    raw.lock(1, 7, "reuse/1"); // queued behind the holder
    raw.lock(2, 7, "reuse/2"); // the same id while the first is unanswered
    await raw.closed;
    assertLogged(h, /request id 7 is reused while the LOCK request with that id is still unanswered/);

    const leaver = await RawClient.open(h.port);
    assert.equal(await leaver.greet(0x53n), WireError.NONE);
    leaver.send({ seq: 1, id: 3, cmd: Command.FAREWELL }, { kind: "farewell", body: {} });
    leaver.send({ seq: 2, id: 3, cmd: Command.FAREWELL }, { kind: "farewell", body: {} });
    await leaver.closed;
    assertLogged(h, /request id 3 is reused/);
    assert.equal(await metric(h.server, "keylock_protocol_errors_total"), 2);
    assert.deepEqual(h.fatal, []);
    held.release();
    await holder.close();
    await honestClientWorks(h.address, "reuse/2");
  } finally {
    await h.stop();
  }
});

test("hostile session - a greeted client that breaks the protocol is treated as vanished: fenced, reclaimed, its lock granted to the next", async () => {
  const h = await startServer();
  try {
    const raw = await RawClient.open(h.port);
    assert.equal(await raw.greet(0x54n), WireError.NONE);
    raw.lock(1, 1, "vanish/1");
    await raw.next((m) => m.header.response && m.header.cmd === Command.LOCK);
    const other = await connect({ servers: [h.address] });
    const waiting = other.acquire("vanish/1", "write");
    await raw.next((m) => !m.header.response && m.header.cmd === Command.LOCK); // the invalidation
    raw.lock(2, 1, "vanish/2", 1_000); // never answers; breaks the protocol instead
    await raw.closed;
    const handle = await waiting; // after the reconnect timeout, the fence and the reclaim
    assert.deepEqual(h.fenced.map((f) => [f.rid, f.reason]), [[0x54n, "client_reconnect"]]);
    assert.equal(h.db.clients.has(0x54n), false);
    handle.release();
    await other.close();
  } finally {
    await h.stop();
  }
});

test("hostile session - a session over sessionUnackedMax is fenced and reclaimed, not just dropped", async () => {
  const h = await startServer({ limits: { sessionUnackedMax: 16 } });
  try {
    const raw = await RawClient.open(h.port);
    assert.equal(await raw.greet(0x55n), WireError.NONE);
    // 17 grants it never acknowledges (its ack stays 0): one more than the server keeps for it.
    for (let i = 1; i <= 17; i++) raw.lock(i, i, `cap/${i}`);
    await raw.closed;
    await until("the client is fenced and reclaimed", () => h.fenced.length === 1 && !h.db.clients.has(0x55n));
    assert.deepEqual(h.fenced.map((f) => [f.rid, f.reason]), [[0x55n, "client_reconnect"]]);
    await until("its locks are gone", () => h.server.lockTable.entries === 0);
    await honestClientWorks(h.address, "cap/3");
  } finally {
    await h.stop();
  }
});

/** A store with one client record (rid 0x56) and a write-seq high-water mark of 100: a restarted cluster. */
function restartedDatabase(): MemoryDatabase {
  const db = new MemoryDatabase();
  db.seqHighWater = 100n;
  db.clients.set(0x56n, { rid: 0x56n, name: "old", address: "127.0.0.1:1", pid: 0, pidStart: "", hostname: "old", greetedAtMs: 1, resumeKey: "", claimKey: identityOf(0x56n).claim.publicKey.toString("hex") });
  return db;
}

/** Answers the recovery request with `locks`, reported without grant proofs. */
async function answerRecovery(raw: RawClient, locks: { key: string; mode: "read" | "write"; writeSeq: bigint }[]): Promise<void> {
  const request = await raw.next((m) => m.header.cmd === Command.LOCK_RECOVER && !m.header.response);
  const reports = locks.map((l) => ({
    ...l,
    key: keyFromText(l.key),
    grantTerm: 0n,
    grantNo: 0,
    grantTag: 0,
  }));
  raw.send(
    { seq: 1, ack: request.header.seq, id: request.header.id, cmd: Command.LOCK_RECOVER, response: true },
    { kind: "recover-response", body: { locks: reports } },
  );
}

test("hostile session - a recovery report above the durable write-seq high-water mark is refused; the liar is fenced at the recovery deadline", async () => {
  const db = restartedDatabase();
  const first = await startServer({ db });
  await first.stop(); // formats the store with a port; the next start is the "restart"
  db.seqHighWater = 100n;
  // It may stay away longer than the recovery deadline: that deadline, not the reconnect one, fences it.
  const h = await startServer({ db, reconnectTimeoutMs: 5000 });
  try {
    assert.equal(h.server.recovering, true);
    const raw = await RawClient.open(h.port);
    assert.equal(await raw.greet(0x56n, { lastServerTerm: TERM - 1n }), WireError.NONE);
    // Issue 8 item 4: a token near 2^64 would have raised the high-water mark for good.
    await answerRecovery(raw, [{ key: "rec/1", mode: "write", writeSeq: (1n << 64n) - 2n }]);
    await raw.closed;
    assertLogged(h, /is above 100, the highest the cluster can have handed out/);
    assert.equal(h.server.lockTable.entries, 0, "nothing adopted");
    assert.equal(await metric(h.server, "keylock_protocol_errors_total"), 1);
    assert.ok((await metric(h.server, "keylock_write_seq"))! <= 100);
    // Not wedged: the client never finishes recovering, so the recovery deadline fences and reclaims it.
    await until("recovery finished", () => !h.server.recovering);
    assert.deepEqual(h.fenced.map((f) => [f.rid, f.reason]), [[0x56n, "client_recovery"]]);
    await honestClientWorks(h.address, "rec/1");
    assert.deepEqual(h.fatal, []);
  } finally {
    await h.stop();
  }
});

/** A memory store whose deleteClient waits for `gate` and then succeeds, or fails when `fail` is set. */
function gatedDeleteStore(gate: Promise<void>, fail = false): (db: MemoryDatabase) => MemoryStore {
  class GatedDeleteStore extends MemoryStore {
    override async deleteClient(rid: bigint): Promise<void> {
      await gate;
      if (fail) throw new Error("the store refused the delete");
      return super.deleteClient(rid);
    }
  }
  return (db) => new GatedDeleteStore(db);
}

/** A raw client 0x57 holds write on `key`, a real client waits for it, then the raw one vanishes. */
async function vanishWhileHolding(h: Harness, key: string): Promise<{ waiting: Promise<unknown>; other: Awaited<ReturnType<typeof connect>> }> {
  const raw = await RawClient.open(h.port);
  assert.equal(await raw.greet(0x57n), WireError.NONE);
  raw.lock(1, 1, key);
  await raw.next((m) => m.header.response && m.header.cmd === Command.LOCK);
  const other = await connect({ servers: [h.address], connectTimeoutMs: 1000 });
  const waiting = other.acquire(key, "write");
  waiting.catch(() => undefined);
  raw.close(); // vanishes: reconnect timeout → fence → reclaim
  await until("the vanished client is fenced", () => h.fenced.length === 1);
  return { waiting, other };
}

test("hostile session - reclaim deletes the record before giving the entries away, and a re-greeting meanwhile is refused", async () => {
  let releaseDelete: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => (releaseDelete = resolve));
  const h = await startServer({ makeStore: gatedDeleteStore(gate) });
  try {
    const { waiting, other } = await vanishWhileHolding(h, "order/1");
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(h.db.clients.has(0x57n), true, "the delete is still in flight");
    assert.equal(await Promise.race([waiting.then(() => "granted"), Promise.resolve("waiting")]), "waiting", "no entry given away before the record is gone");
    for (const lastServerTerm of [TERM, TERM - 1n, 0n]) {
      const again = await RawClient.open(h.port);
      assert.equal(await again.greet(0x57n, { lastServerTerm }), WireError.EFENCED, `lastServerTerm ${lastServerTerm}`);
      again.close();
    }
    releaseDelete();
    const handle = (await waiting) as { release(): void };
    assert.equal(h.db.clients.has(0x57n), false);
    const late = await RawClient.open(h.port);
    assert.equal(await late.greet(0x57n, { lastServerTerm: TERM - 1n }), WireError.EFENCED);
    late.close();
    handle.release();
    await other.close();
    assert.deepEqual(h.fatal, []);
  } finally {
    releaseDelete();
    await h.stop();
  }
});

test("hostile session - a reclaim whose record delete fails stops the server without giving the entries away", async () => {
  const h = await startServer({ makeStore: gatedDeleteStore(Promise.resolve(), true) });
  let other: Awaited<ReturnType<typeof connect>> | undefined;
  try {
    const vanished = await vanishWhileHolding(h, "order/2");
    other = vanished.other;
    const waiting = vanished.waiting;
    await until("the server stops", () => h.fatal.length === 1);
    assert.match(h.fatal[0]!, /reclaiming 0000000000000057 failed: the store refused the delete/);
    assert.equal(h.db.clients.has(0x57n), true, "the record stays for the next server, which fences again");
    assert.equal(await Promise.race([waiting.then(() => "granted"), new Promise((r) => setTimeout(() => r("waiting"), 100))]), "waiting");
  } finally {
    await h.stop();
    await other?.close().catch(() => undefined);
  }
});

test("hostile session - a client that greets again as new while its request is queued gets no answer on the new session, and nothing throws", async () => {
  const h = await startServer();
  try {
    const holder = await connect({ servers: [h.address] });
    const held = await holder.acquire("regreet/1", "write");
    const first = await RawClient.open(h.port);
    assert.equal(await first.greet(0x58n), WireError.NONE);
    first.lock(1, 1, "regreet/1"); // queued behind the holder, with request id 1 of the first session
    await until("the request is queued", () => h.server.lockTable.entries === 2);
    const second = await RawClient.open(h.port);
    assert.equal(await second.greet(0x58n), WireError.NONE); // a new session replaces the first
    await first.closed;
    held.release(); // the grant for request 1 has no request 1 to answer on the new session
    await holder.close();
    await second.closed;
    assertLogged(h, /an answer to request 1 of a session this client replaced by a new greeting/);
    assert.deepEqual(h.fatal, []);
    await honestClientWorks(h.address, "regreet/2");
  } finally {
    await h.stop();
  }
});
