// A hostile (or broken) server against the real client library, over a real loopback socket (issue 8,
// DESIGN §9): nothing a server sends may throw in the client's process. Frames the client cannot match
// are reported as EPROTO ("error" event) and the client reconnects as after a reset; answers to requests
// it never made are dropped. Also: a client name over the limit fails connect() at once with EINVAL.
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { connect, type LockClient } from "../../src/client/client.js";
import { KeylockError } from "../../src/core/errors.js";
import { keyFromText } from "../../src/core/keys.js";
import { FramedConnection } from "../../src/io/tcp.js";
import { CLIENT_NAME_BYTES_MAX, Command, PROTOCOL_VERSION, WireError, type Body, type Message } from "../../src/protocol/messages.js";

const TERM = 3n;

/** One fake server: answers greetings (always term 3), records what clients send, sends what the test says. */
class FakeServer {
  greetings = 0;
  readonly received: Message[] = [];
  /** The server's seq counter and the last seq received: kept across the client's reconnects (one session). */
  private nextSeq = 1;
  private lastReceived = 0;
  private grantsMade = 0;
  private current: FramedConnection | null = null;
  private waiters: (() => void)[] = [];

  private constructor(
    private readonly server: net.Server,
    readonly address: string,
  ) {}

  static async start(): Promise<FakeServer> {
    let fake: FakeServer | null = null;
    const server = net.createServer((socket) => fake!.accept(socket));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    fake = new FakeServer(server, `127.0.0.1:${(server.address() as net.AddressInfo).port}`);
    return fake;
  }

  private accept(socket: net.Socket): void {
    const connection = new FramedConnection(socket);
    connection.start({
      onMessage: (message) => {
        if (message.payload.kind === "hello-request") {
          connection.send({
            header: { seq: 1, ack: 0, id: message.header.id, cmd: Command.HELLO, response: true, error: WireError.NONE },
            payload: { kind: "hello-response", body: { clusterId: "fake", protocolVersion: PROTOCOL_VERSION, nonce: new Uint8Array(32) } },
          });
        } else if (message.payload.kind === "greeting-request") {
          this.greetings++;
          this.current = connection;
          connection.send({
            header: { seq: 1, ack: 0, id: message.header.id, cmd: Command.GREETING, response: true, error: WireError.NONE },
            payload: {
              kind: "greeting-response",
              body: {
                clusterId: "fake",
                protocolVersion: PROTOCOL_VERSION,
                serverTerm: TERM,
                rid: message.payload.body.rid,
                proof: new Uint8Array(0),
                resumeSecret: new Uint8Array(32),
              },
            },
          });
        } else {
          if (message.header.seq > this.lastReceived) this.lastReceived = message.header.seq;
          this.received.push(message);
        }
        for (const wake of this.waiters.splice(0)) wake();
      },
      onClose: () => {
        if (this.current === connection) this.current = null;
      },
    });
  }

  /** Sends on the current connection; `seq` and `ack` default to the honest values. */
  send(header: Partial<Message["header"]> & { id: number; cmd: Command }, payload: Body): void {
    const seq = header.seq ?? this.nextSeq++;
    this.current!.send({ header: { seq, ack: this.lastReceived, response: false, error: WireError.NONE, ...header }, payload });
  }

  /** An invalidation (a LOCK request): no grant proof. */
  lockBody(key: string, oldMode: "null" | "read" | "write", newMode: "null" | "read" | "write"): Body {
    const body = { key: keyFromText(key), oldMode, newMode, writeSeq: 0n, noQueue: false };
    return { kind: "lock", body: { ...body, grantTerm: 0n, grantNo: 0, grantTag: 0 } };
  }

  /**
   * A grant (a LOCK response): of a non-null mode, with the proof of this server's next grant, its term
   * `grantTerm` (the client checks it is the server's) and a made-up tag (only a server checks tags).
   */
  grantBody(
    key: string,
    oldMode: "null" | "read" | "write",
    newMode: "read" | "write",
    writeSeq = 0n,
    grantTerm = TERM,
  ): Body {
    const grantNo = ++this.grantsMade;
    const body = { key: keyFromText(key), oldMode, newMode, writeSeq, noQueue: false };
    return { kind: "lock", body: { ...body, grantTerm, grantNo, grantTag: 0x5eed00 + grantNo } };
  }

  /** The first message from the client matching `pick`, waiting for it. */
  async next(pick: (message: Message) => boolean): Promise<Message> {
    const deadline = Date.now() + 3000;
    for (;;) {
      const found = this.received.find(pick);
      if (found) return found;
      if (Date.now() > deadline) throw new Error("timed out waiting for a client message");
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  async until(what: string, condition: () => boolean): Promise<void> {
    const deadline = Date.now() + 3000;
    while (!condition()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  close(): Promise<void> {
    this.current?.destroy("test done");
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** A client on `fake` whose "error" events are collected. */
async function clientOf(fake: FakeServer, options: { onInvalidate?: () => Promise<void> } = {}): Promise<{ client: LockClient; errors: KeylockError[] }> {
  const client = await connect({ servers: [fake.address], connectTimeoutMs: 2000, ...options });
  const errors: KeylockError[] = [];
  client.on("error", (error) => errors.push(error as KeylockError));
  return { client, errors };
}

async function lockRequest(fake: FakeServer, key: string): Promise<Message> {
  return fake.next((m) => m.header.cmd === Command.LOCK && !m.header.response && m.payload.kind === "lock" && m.payload.body.key === keyFromText(key));
}

function closeQuietly(client: LockClient): void {
  void client.close().catch(() => undefined);
}

test("hostile server - answers to requests never made or answered twice are dropped without an error", async () => {
  const fake = await FakeServer.start();
  const { client, errors } = await clientOf(fake);
  try {
    const acquiring = client.acquire("k", "write");
    const request = await lockRequest(fake, "k");
    fake.send({ id: 999, cmd: Command.LOCK, response: true }, fake.grantBody("k", "null", "write", 5n)); // never asked
    fake.send(
      { id: request.header.id, cmd: Command.LOCK, response: true },
      fake.grantBody("k", "null", "write", 6n),
    );
    const handle = await acquiring;
    assert.equal(handle.writeSeq, 6n);
    fake.send(
      { id: request.header.id, cmd: Command.LOCK, response: true },
      fake.grantBody("k", "null", "write", 7n),
    ); // twice
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(errors, []);
    assert.equal(fake.greetings, 1, "no reconnect");
    handle.release();
  } finally {
    closeQuietly(client);
    await fake.close();
  }
});

test("hostile server - a grant that does not fit the request, or EAGAIN for a queued one, is EPROTO and the client reconnects", async () => {
  const cases: [string, (fake: FakeServer, request: Message) => void, RegExp][] = [
    [
      "a grant for another key",
      (fake, r) =>
        fake.send(
          { id: r.header.id, cmd: Command.LOCK, response: true },
          fake.grantBody("other", "null", "write", 5n),
        ),
      /a grant for another key \(other\)/,
    ],
    [
      "a grant of another mode",
      (fake, r) =>
        fake.send(
          { id: r.header.id, cmd: Command.LOCK, response: true },
          fake.grantBody("k", "null", "read"),
        ),
      /a grant of read for a request for write/,
    ],
    [
      "a grant whose proof names another term",
      (fake, r) =>
        fake.send(
          { id: r.header.id, cmd: Command.LOCK, response: true },
          fake.grantBody("k", "null", "write", 5n, TERM + 1n),
        ),
      /a grant of write whose proof names term 4, not the server's term 3/,
    ],
    ["EAGAIN for a queued request", (fake, r) => fake.send({ id: r.header.id, cmd: Command.LOCK, response: true, error: WireError.EAGAIN }, { kind: "error", body: { message: "busy" } }), /EAGAIN for a request that may queue/],
    ["an error answer", (fake, r) => fake.send({ id: r.header.id, cmd: Command.LOCK, response: true, error: WireError.EPROTO }, { kind: "error", body: { message: "nope" } }), /the request failed: nope/],
  ];
  for (const [name, misbehave, pattern] of cases) {
    const fake = await FakeServer.start();
    const { client, errors } = await clientOf(fake);
    try {
      void client.acquire("k", "write").catch(() => undefined);
      misbehave(fake, await lockRequest(fake, "k"));
      await fake.until(`${name}: the client reconnects`, () => fake.greetings === 2);
      const eproto = errors.filter((e) => e.code === "EPROTO");
      assert.equal(eproto.length, 1, `${name}: ${errors.map((e) => e.message).join("; ")}`);
      assert.match(eproto[0]!.message, pattern, name);
    } finally {
      closeQuietly(client);
      await fake.close();
    }
  }
});

test("hostile server - an ack of seqs never sent or an invalidation id reused while owed is EPROTO, never a throw", async () => {
  const fake = await FakeServer.start();
  let finishCallback: () => void = () => undefined;
  const { client, errors } = await clientOf(fake, { onInvalidate: () => new Promise<void>((resolve) => (finishCallback = resolve)) });
  try {
    // An invalidation for a key the client does not hold is answered at once (B12): honest after failover.
    fake.send({ id: 1, cmd: Command.LOCK }, fake.lockBody("never-held", "write", "null"));
    await fake.next((m) => m.header.response && m.header.id === 1);

    const acquiring = client.acquire("k", "write");
    const request = await lockRequest(fake, "k");
    fake.send(
      { id: request.header.id, cmd: Command.LOCK, response: true },
      fake.grantBody("k", "null", "write", 9n),
    );
    (await acquiring).release();
    fake.send({ id: 2, cmd: Command.LOCK }, fake.lockBody("k", "write", "null")); // its callback hangs
    await new Promise((resolve) => setTimeout(resolve, 50));
    fake.send({ id: 2, cmd: Command.LOCK }, fake.lockBody("k", "write", "null")); // the same id, still owed
    await fake.until("the client reconnects", () => fake.greetings === 2);
    assert.match(errors.find((e) => e.code === "EPROTO")?.message ?? "", /request id 2 is reused/);

    // Issue 8 item 2 on the client side: an ack claiming seqs it never sent.
    fake.send({ id: 3, cmd: Command.LOCK, ack: 2 ** 53 - 2 }, fake.lockBody("x", "read", "null"));
    await fake.until("the client reconnects again", () => fake.greetings === 3);
    assert.match(errors.filter((e) => e.code === "EPROTO")[1]?.message ?? "", /acknowledges seqs never sent/);
    finishCallback(); // the answer to invalidation 2 goes out now, exactly once
    await fake.next((m) => m.header.response && m.header.id === 2);
  } finally {
    finishCallback();
    closeQuietly(client);
    await fake.close();
  }
});

test("client api - a name over CLIENT_NAME_BYTES_MAX rejects connect() at once with EINVAL naming the limit", async () => {
  const fake = await FakeServer.start();
  try {
    const started = Date.now();
    const error = await connect({ servers: [fake.address], name: "n".repeat(CLIENT_NAME_BYTES_MAX + 1), connectTimeoutMs: 3000 }).catch(
      (e: unknown) => e,
    );
    assert.ok(error instanceof KeylockError && error.code === "EINVAL", String(error));
    assert.match(error.message, /CLIENT_NAME_BYTES_MAX \(256\)/);
    assert.ok(Date.now() - started < 1000, "refused at once, not after reconnecting until the timeout");
    assert.equal(fake.greetings, 0);
    // Multi-byte characters count as bytes: 129 two-byte characters are 258 bytes.
    const wide = await connect({ servers: [fake.address], name: "é".repeat(129) }).catch((e: unknown) => e);
    assert.ok(wide instanceof KeylockError && wide.code === "EINVAL");
    const ok = await connect({ servers: [fake.address], name: "n".repeat(CLIENT_NAME_BYTES_MAX), connectTimeoutMs: 3000 });
    closeQuietly(ok);
  } finally {
    await fake.close();
  }
});
