// DESIGN §9 identity rows, end to end against a real server over TCP and the real client library
// (greeting v2, docs/protocol.md §6.1): a captured greeting replayed gets nothing; a second client holding
// the cluster secret cannot resume, recover or farewell another client's rid; a member that does not hold
// the secret is detected (EAUTH); a first greeting whose answer was lost can be resent (B21) while a
// stranger cannot claim the rid; admin queries need the secret.
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect } from "../../src/index.js";
import { connectInWorld } from "../../src/client/client.js";
import { realWorld } from "../../src/io/world.js";
import { KeylockError } from "../../src/core/errors.js";
import { startEmbedded, type Embedded } from "../../src/runtime/embedded.js";
import { FramedConnection, connectTcp } from "../../src/io/tcp.js";
import { FrameDecoder, encodeMessage } from "../../src/protocol/codec.js";
import { Command, PROTOCOL_VERSION, WireError, type Message } from "../../src/protocol/messages.js";
import { adminQuery } from "../../src/client/admin.js";
import { RawIdentity, rawGreet } from "../support/greet.js";
import { freePort, runCli, tempDir } from "../support/processes.js";

const SECRET = "identity-test-secret-0123456789abcdef";

async function withServer<T>(fn: (server: Embedded, dir: string, port: number) => Promise<T>, secret: string | undefined = SECRET): Promise<T> {
  const dir = tempDir("identity");
  const port = await freePort();
  const server = await startEmbedded({ dir: dir.path, host: "127.0.0.1", port, reconnectTimeoutMs: 20_000, log: () => undefined, announce: () => undefined, ...(secret === undefined ? {} : { secret }) });
  try {
    return await fn(server, dir.path, port);
  } finally {
    await server.stop();
    dir.remove();
  }
}

/** A raw connection whose greeting-phase answers can be awaited one by one. */
async function rawConnection(port: number): Promise<{ connection: FramedConnection; next: () => Promise<Message>; closed: () => boolean }> {
  const connection = new FramedConnection(await connectTcp("127.0.0.1", port, 2000));
  const queue: Message[] = [];
  let wake: () => void = () => undefined;
  let isClosed = false;
  connection.start({
    onMessage: (m) => {
      queue.push(m);
      wake();
    },
    onClose: () => {
      isClosed = true;
      wake();
    },
  });
  const next = async (): Promise<Message> => {
    const deadline = Date.now() + 5000;
    while (queue.length === 0) {
      if (isClosed) throw new Error("closed before an answer");
      if (Date.now() > deadline) throw new Error("no answer within 5 s");
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 100);
      });
    }
    return queue.shift()!;
  };
  return { connection, next, closed: () => isClosed };
}

async function greetAs(port: number, identity: RawIdentity, fields: Parameters<typeof rawGreet>[3] = {}): Promise<{ error: WireError; message: string }> {
  const raw = await rawConnection(port);
  try {
    const answer = await rawGreet((m) => raw.connection.send(m), raw.next, identity, fields);
    return { error: answer.header.error, message: answer.payload.kind === "error" ? answer.payload.body.message : "" };
  } finally {
    raw.connection.destroy("test done");
  }
}

/** A loopback proxy that records every byte clients send through it (one buffer per connection). */
async function recordingProxy(targetPort: number): Promise<{ port: number; sent: Buffer[][]; close(): Promise<void> }> {
  const sent: Buffer[][] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const chunks: Buffer[] = [];
    sent.push(chunks);
    const upstream = net.connect(targetPort, "127.0.0.1");
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("error", () => undefined);
      socket.on("close", () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      upstream.write(chunk);
    });
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    sent,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

test("identity - a captured greeting replayed on a new connection is refused EAUTH; the victim keeps its lock", async () => {
  await withServer(async (server, _dir, port) => {
    const proxy = await recordingProxy(port);
    try {
      const victim = await connect({ servers: [`127.0.0.1:${proxy.port}`], secret: SECRET, name: "victim" });
      const held = await victim.acquire("replay/1", "write");
      const captured = new FrameDecoder().push(Buffer.concat(proxy.sent[0]!));
      assert.equal(captured[0]?.header.cmd, Command.HELLO);
      assert.equal(captured[1]?.header.cmd, Command.GREETING);
      for (let attempt = 0; attempt < 2; attempt++) {
        const raw = await rawConnection(port); // straight to the server, as an eavesdropper would
        raw.connection.send(captured[0]);
        const hello = await raw.next();
        assert.equal(hello.header.error, WireError.NONE);
        raw.connection.send(captured[1]); // the same bytes; the server's nonce is new
        const answer = await raw.next();
        assert.equal(answer.header.error, WireError.EAUTH);
        assert.match(answer.payload.kind === "error" ? answer.payload.body.message : "", /does not verify on this connection/);
        raw.connection.destroy("done");
      }
      // Raw bytes written at once (HELLO and GREETING together) fare no better.
      const blind = net.connect(port, "127.0.0.1");
      blind.on("error", () => undefined);
      const frames: Message[] = [];
      const decoder = new FrameDecoder();
      blind.on("data", (chunk: Buffer) => frames.push(...decoder.push(chunk)));
      blind.write(Buffer.concat([encodeMessage(captured[0]), encodeMessage(captured[1])]));
      await new Promise((resolve) => blind.on("close", resolve));
      assert.deepEqual(frames.map((f) => f.header.error), [WireError.NONE, WireError.EAUTH]);
      const status = (await adminQuery({ servers: [server.address], secret: SECRET }, Command.ADMIN_LOCKS)) as { key: Uint8Array; state: string }[];
      assert.equal(status.filter((row) => row.state === "granted").length, 1, "the victim still holds its lock, nobody else got it");
      held.release();
      await victim.close();
    } finally {
      await proxy.close();
    }
  });
});

test("identity - a second client holding the cluster secret cannot resume, farewell or recover another client's rid", async () => {
  await withServer(async (first, dir, port) => {
    const victim = await connect({ servers: [first.address], secret: SECRET, name: "victim" });
    const held = await victim.acquire("owned/1", "write");
    const rid = victim.rid;
    const term = (await adminQuery({ servers: [first.address], secret: SECRET }, Command.ADMIN_STATUS)) as { term: string | bigint | number };
    const serverTerm = BigInt(term.term);
    for (const [what, fields] of [
      ["a resent first greeting", { lastServerTerm: 0n }],
      ["a reconnect (resume the session)", { lastServerTerm: serverTerm }],
      ["a farewell", { lastServerTerm: serverTerm, farewell: true }],
      ["a first greeting carrying the farewell flag", { lastServerTerm: 0n, farewell: true }],
      ["first contact after a failover (recover its locks)", { lastServerTerm: serverTerm - 1n }],
    ] as const) {
      const thief = new RawIdentity(rid, SECRET); // holds the cluster secret, not the victim's resumption secret
      const answer = await greetAs(port, thief, fields);
      if (fields.lastServerTerm === 0n) {
        // A first greeting with a claim of its own: told the rid is someone else's (a client that never
        // greeted draws another; the victim's record is untouched either way).
        assert.equal(answer.error, WireError.ERIDTAKEN, what);
        assert.match(answer.message, /the rid is recorded for another client/, what);
      } else {
        assert.equal(answer.error, WireError.EAUTH, what);
        assert.match(answer.message, /no proof of this client's resumption secret/, what);
      }
    }
    // The victim noticed nothing: its lock holds, another client waits behind it.
    const other = await connect({ servers: [first.address], secret: SECRET, name: "other" });
    const waiting = other.acquire("owned/1", "write", { nonblock: true });
    await assert.rejects(waiting, (e: unknown) => e instanceof KeylockError && e.code === "EAGAIN");
    // Recovery: the server restarts (a new term); the thief greets first as the victim's rid and is
    // refused; the victim reconnects with its resumption secret and recovers its lock.
    await first.stop();
    const second = await startEmbedded({ dir, host: "127.0.0.1", port, reconnectTimeoutMs: 20_000, recoveryTimeoutMs: 20_000, log: () => undefined, announce: () => undefined, secret: SECRET });
    try {
      const thief = new RawIdentity(rid, SECRET);
      const answer = await greetAs(port, thief, { lastServerTerm: serverTerm });
      assert.equal(answer.error, WireError.EAUTH, "recovering another's locks");
      // The victim recovers: the other client still cannot take the key until the victim releases it.
      await assert.rejects(other.acquire("owned/1", "write", { nonblock: true }), (e: unknown) => e instanceof KeylockError && e.code === "EAGAIN");
      held.release();
      const taken = await other.acquire("owned/1", "write");
      taken.release();
      await victim.close();
      await other.close();
    } finally {
      await second.stop();
    }
  });
});

test("identity - a resent first greeting whose answer was lost is served (B21); a stranger's claim on that rid is not", async () => {
  await withServer(async (_server, _dir, port) => {
    const identity = new RawIdentity(0x5eedn, SECRET);
    assert.equal((await greetAs(port, identity)).error, WireError.NONE);
    assert.ok(identity.resume !== null, "the first answer carried a resumption secret");
    // The answer was lost: the client never saw R and resends its first greeting, signed by its claim.
    const lostAnswer = Object.assign(new RawIdentity(0x5eedn, SECRET), { claim: identity.claim });
    assert.equal((await greetAs(port, lostAnswer)).error, WireError.NONE, "the resent first greeting");
    assert.equal(lostAnswer.resume, null, "no second resumption secret: the claim keeps standing in");
    const stranger = new RawIdentity(0x5eedn, SECRET);
    const answer = await greetAs(port, stranger);
    assert.equal(answer.error, WireError.ERIDTAKEN);
    // The owner carries on with either proof.
    assert.equal((await greetAs(port, identity, { lastServerTerm: 0n })).error, WireError.NONE, "signed by R");
    assert.equal((await greetAs(port, lostAnswer, { lastServerTerm: 0n })).error, WireError.NONE);
  });
});

test("identity - a member that does not hold the secret is detected: the client and the CLI fail with EAUTH", async () => {
  // An impostor that speaks the protocol and answers every greeting, with a proof made without the secret.
  const impostor = net.createServer((socket) => {
    const connection = new FramedConnection(socket);
    connection.start({
      onMessage: (m) => {
        if (m.payload.kind === "hello-request") {
          connection.send({
            header: { seq: 1, ack: m.header.seq, id: m.header.id, cmd: Command.HELLO, response: true, error: WireError.NONE },
            payload: { kind: "hello-response", body: { clusterId: "victim-cluster", protocolVersion: PROTOCOL_VERSION, nonce: new Uint8Array(32).fill(7) } },
          });
        } else if (m.payload.kind === "greeting-request") {
          connection.send({
            header: { seq: 1, ack: m.header.seq, id: m.header.id, cmd: Command.GREETING, response: true, error: WireError.NONE },
            payload: {
              kind: "greeting-response",
              body: { clusterId: "victim-cluster", protocolVersion: PROTOCOL_VERSION, serverTerm: 9n, rid: m.payload.body.rid, proof: new Uint8Array(32).fill(1), resumeSecret: new Uint8Array(32) },
            },
          });
        }
      },
      onClose: () => undefined,
    });
  });
  await new Promise<void>((resolve) => impostor.listen(0, "127.0.0.1", resolve));
  const address = `127.0.0.1:${(impostor.address() as net.AddressInfo).port}`;
  try {
    await assert.rejects(connect({ servers: [address], secret: SECRET, connectTimeoutMs: 3000 }), (e: unknown) => {
      assert.ok(e instanceof KeylockError && e.code === "EAUTH", String(e));
      assert.match(e.message, /did not prove it holds the cluster secret/);
      return true;
    });
    await assert.rejects(adminQuery({ servers: [address], secret: SECRET }, Command.ADMIN_STATUS), /EAUTH|did not prove/);
  } finally {
    await new Promise((resolve) => impostor.close(resolve));
  }
});

test("identity - admin queries on a cluster with a secret need it (CLI): none or a wrong one is EAUTH, the right one works", async () => {
  await withServer(async (server, dir) => {
    const good = join(dir, "secret");
    const bad = join(dir, "wrong");
    writeFileSync(good, SECRET, { mode: 0o600 });
    writeFileSync(bad, "another-secret-entirely-0123456789", { mode: 0o600 });
    const without = await runCli(["status", "--servers", server.address, "--json"]);
    assert.notEqual(without.code, 0);
    assert.match(without.stderr, /EAUTH.*no proof: pass the cluster secret/s);
    const wrong = await runCli(["locks", "--servers", server.address, "--secret-file", bad, "--json"]);
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /EAUTH.*wrong cluster secret/s);
    const right = await runCli(["stats", "--servers", server.address, "--secret-file", good, "--json"]);
    assert.equal(right.code, 0, right.stderr);
  });
});

test("identity - out of order: a GREETING before HELLO, or a second HELLO, is EPROTO on that connection only; an honest client still locks", async () => {
  await withServer(async (server) => {
    const port = Number(server.server.address.split(":").pop());
    const nonce = new Uint8Array(32).fill(9);
    const hello = (id: number): Message => ({
      header: { seq: id, ack: 0, id, cmd: Command.HELLO, response: false, error: WireError.NONE },
      payload: { kind: "hello-request", body: { protocolVersion: PROTOCOL_VERSION, nonce } },
    });
    const early = await rawConnection(port);
    early.connection.send({
      header: { seq: 1, ack: 0, id: 1, cmd: Command.GREETING, response: false, error: WireError.NONE },
      payload: {
        kind: "greeting-request",
        body: { clusterId: "", protocolVersion: PROTOCOL_VERSION, rid: 5n, lastServerTerm: 0n, farewell: false, name: "early", pid: 1, proof: new Uint8Array(0), admin: false, claimKey: new Uint8Array(0), identityProof: new Uint8Array(0) },
      },
    });
    const refused = await early.next();
    assert.equal(refused.header.error, WireError.EPROTO);
    early.connection.destroy("test done");

    const twice = await rawConnection(port);
    twice.connection.send(hello(1));
    assert.equal((await twice.next()).payload.kind, "hello-response");
    twice.connection.send(hello(2));
    assert.equal((await twice.next()).header.error, WireError.EPROTO);
    twice.connection.destroy("test done");

    const honest = await connect({ servers: [server.server.address], secret: SECRET, name: "honest" });
    try {
      (await honest.acquire("identity/reorder", "write")).release();
    } finally {
      await honest.close();
    }
  });
});

test("identity - a rid taken by a stranger before the client's first greeting (F2): the client greets again under another rid", async () => {
  // No cluster secret: anyone can be a client. A stranger who saw a client's rid on the wire greets first
  // with it (its own claim); the client's first greeting is answered ERIDTAKEN, it draws another rid and
  // connects; the stranger's record is untouched and the client works as any other.
  const dir = tempDir("identity-f2");
  const port = await freePort();
  const server = await startEmbedded({ dir: dir.path, host: "127.0.0.1", port, reconnectTimeoutMs: 20_000, log: () => undefined, announce: () => undefined });
  try {
    const rid = 0x7a6e_0000_0000_0042n;
    const stranger = new RawIdentity(rid);
    assert.equal((await greetAs(port, stranger)).error, WireError.NONE, "the stranger's first greeting");
    const warnings: string[] = [];
    const logger = { debug: () => undefined, info: () => undefined, warn: (_fields: unknown, message: string) => void warnings.push(message), error: () => undefined };
    const client = await connectInWorld({ servers: [server.address], name: "honest", logger }, realWorld, rid);
    try {
      assert.notEqual(client.rid, rid, "the client drew another rid");
      assert.match(warnings.join("\n"), /holds this rid for another client; greeting again as/);
      const handle = await client.acquire("f2/key", "write");
      assert.ok(handle.writeSeq > 0n);
      handle.release();
      // The stranger still owns its rid (its resumption secret works), and the client's is its own.
      assert.equal((await greetAs(port, stranger, { lastServerTerm: 0n })).error, WireError.NONE, "the stranger resumes its rid");
    } finally {
      await client.close();
    }
    // A client that already had a session never draws another rid: it is EAUTH, as for any other thief.
    const owner = new RawIdentity(0x7a6e_0000_0000_0043n);
    assert.equal((await greetAs(port, owner)).error, WireError.NONE);
    const forgetful = new RawIdentity(owner.rid);
    assert.equal((await greetAs(port, forgetful, { lastServerTerm: 1n })).error, WireError.EAUTH);
  } finally {
    await server.stop();
    dir.remove();
  }
});
