// The client's connection driver against small fake servers on 127.0.0.1 (in-process: the driver, not the core).
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { connect } from "../../src/index.js";
import { KeylockError } from "../../src/core/errors.js";
import { ATTEMPT_MIN_MS, RECONNECT_DELAY_BASE_MS, RECONNECT_DELAY_CAP_MS, reconnectDelayMs } from "../../src/client/connection.js";
import { connectInWorld } from "../../src/client/client.js";
import type { Clock, World } from "../../src/io/world.js";

async function listen(onSocket: (socket: net.Socket) => void): Promise<{ address: string; close(): Promise<void> }> {
  const server = net.createServer(onSocket);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    address: `127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

test("client connection - failed attempts back off with jittered, growing delays instead of spinning (regression B30)", async () => {
  let attempts = 0;
  const refusing = await listen((socket) => {
    attempts++;
    socket.destroy(); // accept, then drop before any greeting answer
  });
  const started = Date.now();
  const error = await connect({ servers: [refusing.address], connectTimeoutMs: 1000 }).catch((e: unknown) => e);
  const elapsed = Date.now() - started;
  await refusing.close();
  assert.ok(error instanceof KeylockError && error.code === "ETIMEDOUT", String(error));
  assert.ok(attempts >= 3, `only ${attempts} attempts in ${elapsed} ms`);
  // Delays are uniform in [0, min(500, 50·2^n) ms): about 25 + 50 + 100 + 200 + 250 ms on average for the first five.
  assert.ok(attempts <= 15, `${attempts} attempts in ${elapsed} ms: no back-off`);
});

test("client connection - a server that answers every greeting ERIDTAKEN costs a never-greeted client only its connect deadline", async () => {
  // A hostile or broken server saying "that rid is someone else's" forever: the client draws rid after rid
  // (it holds nothing under any of them), backs off between attempts, and gives up with ETIMEDOUT at its
  // deadline, never with EAUTH and never spinning.
  const { FramedConnection } = await import("../../src/io/tcp.js");
  const { Command, WireError } = await import("../../src/protocol/messages.js");
  let connections = 0;
  const fake = await listen((socket) => {
    connections++;
    const connection = new FramedConnection(socket);
    connection.start({
      onMessage: (m) => {
        connection.send({
          header: { seq: 1, ack: m.header.seq, id: m.header.id, cmd: Command.HELLO, response: true, error: WireError.ERIDTAKEN },
          payload: { kind: "error", body: { message: "the rid is recorded for another client" } },
        });
        connection.close("answered");
      },
      onClose: () => undefined,
    });
  });
  const rids: string[] = [];
  const logger = { debug: () => undefined, info: () => undefined, warn: (fields: { newRid?: string }) => void rids.push(fields.newRid ?? "?"), error: () => undefined };
  try {
    const started = Date.now();
    await assert.rejects(
      connect({ servers: [fake.address], connectTimeoutMs: 1500, logger }),
      (e: unknown) => e instanceof KeylockError && e.code === "ETIMEDOUT" && /recorded for another client/.test(e.message),
    );
    const tookMs = Date.now() - started;
    assert.ok(connections >= 2 && connections < 200, `${connections} connections in ${tookMs} ms: retried, with back-off`);
    assert.equal(rids.length, connections, "one new rid per refusal");
    assert.equal(new Set(rids).size, rids.length, "every rid drawn is new");
  } finally {
    await fake.close();
  }
});

test("client connection - no attempt starts with less than ATTEMPT_MIN_MS left, so the last real failure names the timeout", async () => {
  // A virtual clock (timers fire in time order, one per turn) and a transport that refuses every connect at
  // once, recording the time each attempt is given. random() = 0.999: delays 49, 99, 199, 399 ms, so after
  // three of them (347 ms) a 399 ms pause ends 10 ms before a 756 ms deadline: too late for an attempt.
  let now = 0;
  const timers = new Set<{ at: number; run: () => void }>();
  let stepping = false;
  const kick = (): void => {
    if (stepping) return;
    stepping = true;
    setImmediate(step);
  };
  const step = (): void => {
    stepping = false;
    if (timers.size === 0) return;
    const next = [...timers].reduce((a, b) => (b.at < a.at ? b : a));
    timers.delete(next);
    now = Math.max(now, next.at);
    next.run();
    kick();
  };
  const clock: Clock = {
    now: () => now,
    monotonicMs: () => now,
    setTimeout: (run, delayMs) => {
      const timer = { at: now + Math.max(0, delayMs), run };
      timers.add(timer);
      kick();
      return timer;
    },
    clearTimeout: (timer) => void timers.delete(timer as unknown as { at: number; run: () => void }),
  };
  const given: number[] = [];
  const world: World = {
    clock,
    random: () => 0.999,
    transport: {
      connect: (_server, timeoutMs) => {
        given.push(timeoutMs);
        return Promise.reject(new Error(`refused (attempt ${given.length})`));
      },
    },
  };
  try {
    await assert.rejects(
      connectInWorld({ servers: ["127.0.0.1:1"], connectTimeoutMs: 756 }, world, 7n),
      (e: unknown) => e instanceof KeylockError && e.code === "ETIMEDOUT" && /refused \(attempt 4\)/.test(e.message),
    );
    assert.deepEqual(given.length, 4, `attempts given ${given.join(", ")} ms`);
    assert.ok(given.every((ms) => ms >= ATTEMPT_MIN_MS), `attempts given ${given.join(", ")} ms`);
  } finally {
    timers.clear();
  }
});

test("client connection - the back-off is full jitter, doubling from 50 ms to a 500 ms cap", () => {
  assert.equal(reconnectDelayMs(0, () => 0), 0);
  assert.equal(reconnectDelayMs(0, () => 0.999999), 49);
  assert.equal(reconnectDelayMs(2, () => 0.5), 100);
  assert.equal(reconnectDelayMs(10, () => 0.999999), RECONNECT_DELAY_CAP_MS - 1);
  assert.equal(reconnectDelayMs(1000, () => 0.5), RECONNECT_DELAY_CAP_MS / 2);
  for (let attempt = 0; attempt < 40; attempt++) {
    const delay = reconnectDelayMs(attempt);
    assert.ok(delay >= 0 && delay < Math.min(RECONNECT_DELAY_CAP_MS, RECONNECT_DELAY_BASE_MS * 2 ** attempt));
  }
});

test("client connection - connect() to nothing rejects with ETIMEDOUT naming the members", async () => {
  const gone = await listen(() => undefined);
  const address = gone.address;
  await gone.close();
  const error = await connect({ servers: [address], connectTimeoutMs: 300 }).catch((e: unknown) => e);
  assert.ok(error instanceof KeylockError);
  assert.equal(error.code, "ETIMEDOUT");
  assert.match(error.message, new RegExp(address));
});

test("client connection - connect() failures name each member tried and why", async () => {
  const first = await listen(() => undefined);
  const second = await listen((socket) => socket.destroy());
  const closed = first.address;
  await first.close();
  try {
    const error = await connect({ servers: [closed, second.address], connectTimeoutMs: 300 }).catch((e: unknown) => e);
    assert.ok(error instanceof KeylockError && error.code === "ETIMEDOUT", String(error));
    assert.match(error.message, new RegExp(`${closed}: .*ECONNREFUSED`));
    assert.match(error.message, new RegExp(`${second.address}: connection to ${second.address} closed during greeting`));
  } finally {
    await second.close();
  }
});

test("client connection - bad options are refused with EINVAL", async () => {
  for (const options of [{ servers: [] }, { servers: ["127.0.0.1:1"], idleLockLimit: -1 }, { servers: ["127.0.0.1:1"], connectTimeoutMs: 0 }]) {
    const error = await connect(options).catch((e: unknown) => e);
    assert.ok(error instanceof KeylockError && error.code === "EINVAL", `${JSON.stringify(options)}: ${String(error)}`);
  }
});

test("client api - bad input is refused with a typed error and loses nothing", async () => {
  const { startEmbedded } = await import("../../src/runtime/embedded.js");
  const { tempDir, freePort } = await import("../support/processes.js");
  const dir = tempDir("api");
  const embedded = await startEmbedded({
    dir: dir.path,
    host: "127.0.0.1",
    port: await freePort(),
    reconnectTimeoutMs: 20_000,
    recoveryTimeoutMs: 30_000,
    log: () => undefined,
  });
  try {
    const client = await connect({ servers: [embedded.server.address] });
    const codes = async (p: Promise<unknown>): Promise<string> =>
      p.then(
        () => "ok",
        (e: unknown) => (e instanceof KeylockError ? e.code : String(e)),
      );
    assert.equal(await codes(client.acquire("k", "null" as "read")), "EINVAL");
    assert.equal(await codes(client.acquire("k", "exclusive" as "read")), "EINVAL");
    assert.equal(await codes(client.acquire("x".repeat(1025), "read")), "EINVAL");
    assert.equal(await codes(client.acquire(new Uint8Array(1025), "read")), "EINVAL");
    const handle = await client.acquire("k", "write");
    handle.release();
    assert.throws(() => handle.release(), (e: unknown) => e instanceof KeylockError && e.code === "EINVAL");
    const again = await client.acquire(new Uint8Array([0x6b]), "write"); // the same key as bytes, still usable
    assert.ok(again.writeSeq > 0n);
    again.release();
    await client.close();
    assert.equal(await codes(client.acquire("k", "read")), "ESHUTDOWN");
  } finally {
    await embedded.stop();
    dir.remove();
  }
});

test("server - a greeting with a wrong cluster id or protocol version is refused (EAUTH) and only that connection closes", async () => {
  const { startEmbedded } = await import("../../src/runtime/embedded.js");
  const { tempDir, freePort } = await import("../support/processes.js");
  const { FramedConnection, connectTcp } = await import("../../src/io/tcp.js");
  const { Command, PROTOCOL_VERSION, WireError } = await import("../../src/protocol/messages.js");
  const { GreetingExchange } = await import("../../src/client/handshake.js");
  const { newIdentity } = await import("../../src/io/greeting-proofs.js");
  const dir = tempDir("greet");
  const port = await freePort();
  const embedded = await startEmbedded({ dir: dir.path, host: "127.0.0.1", port, reconnectTimeoutMs: 20_000, log: () => undefined });
  try {
    const good = await connect({ servers: [embedded.address] });
    const held = await good.acquire("g/1", "write");
    for (const [clusterId, protocolVersion] of [["not-this-cluster", PROTOCOL_VERSION], ["", PROTOCOL_VERSION + 1], ["", 1]] as const) {
      const connection = new FramedConnection(await connectTcp("127.0.0.1", port, 2000));
      const answer = await new Promise<{ error: number; closed: boolean }>((resolve) => {
        let error = -1;
        const exchange = new GreetingExchange("test", { rid: 5n, name: "bad", pid: 1, lastServerTerm: 0n, farewell: false, admin: false, secret: undefined, clusterId: "", resume: null, claim: newIdentity() });
        connection.start({
          onMessage: (m) => {
            error = m.header.error;
            if (m.header.cmd !== Command.HELLO || error !== WireError.NONE) return;
            const greeting = exchange.greeting(m); // the proofs do not matter: the cluster id is refused first
            if (greeting.payload.kind === "greeting-request") {
              connection.send({ ...greeting, payload: { kind: "greeting-request", body: { ...greeting.payload.body, clusterId } } });
            }
          },
          onClose: () => resolve({ error, closed: true }),
        });
        const hello = exchange.hello();
        if (hello.payload.kind === "hello-request") {
          connection.send({ ...hello, payload: { kind: "hello-request", body: { ...hello.payload.body, protocolVersion } } });
        }
      });
      assert.deepEqual(answer, { error: WireError.EAUTH, closed: true }, `${clusterId} v${protocolVersion}`);
    }
    held.release(); // the good client carries on
    const again = await good.acquire("g/1", "read");
    again.release();
    await good.close();
  } finally {
    await embedded.stop();
    dir.remove();
  }
});
