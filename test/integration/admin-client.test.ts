// The exported admin client (`connectAdmin`, protocol/admin.ts schema) against a real lock server
// (in-process `startEmbedded`, SQLite in a temp dir) on 127.0.0.1: typed status, locks and stats; a new
// connection after the old one closed; and a hostile member whose answers do not fit the schema (EPROTO,
// never a wrongly typed value).
import { after, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { connect, connectAdmin, KeylockError } from "../../src/index.js";
import { startEmbedded } from "../../src/runtime/embedded.js";
import { keyFromBytes, keyToText, ridToHex } from "../../src/core/keys.js";
import { FrameDecoder, encodeMessage } from "../../src/protocol/codec.js";
import { Command, PROTOCOL_VERSION, WireError, type Message } from "../../src/protocol/messages.js";
import { freePort, tempDir } from "../support/processes.js";

const cleanups: (() => Promise<unknown> | void)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

test("admin client - status, locks and stats are typed answers of the leader; it reconnects after a close", async () => {
  const dir = tempDir("admin-client");
  const port = await freePort();
  const server = await startEmbedded({ dir: dir.path, host: "127.0.0.1", port, reconnectTimeoutMs: 20_000, fenceCommand: "true", log: () => undefined });
  cleanups.push(async () => {
    await server.stop();
    dir.remove();
  });
  const client = await connect({ servers: [server.address], name: "admin-client-test" });
  const handle = await client.acquire("admin/1", "write");
  const admin = await connectAdmin({ servers: ["127.0.0.1:1", server.address] });
  try {
    const status = await admin.status();
    assert.equal(typeof status.term, "bigint");
    assert.deepEqual(status.leader, { slot: 0, address: server.address });
    assert.equal(status.recovering, false);
    const me = status.clients.find((c) => c.rid === ridToHex(client.rid));
    assert.equal(me?.name, "admin-client-test");
    const locks = await admin.locks();
    const row = locks.find((r) => keyToText(keyFromBytes(r.key)) === "admin/1");
    assert.deepEqual(row && { mode: row.mode, state: row.state, rid: row.rid }, { mode: "write", state: "granted", rid: ridToHex(client.rid) });
    const stats = await admin.stats();
    const counted = stats.find((r) => keyToText(keyFromBytes(r.key)) === "admin/1");
    assert.ok(counted !== undefined && counted.grants >= 1 && counted.requests >= 1);
    admin.close();
    // After close the next query connects again.
    assert.equal((await admin.status()).leader?.address, server.address);
  } finally {
    admin.close();
    handle.release();
    await client.close();
  }
});

/** A member that greets admins and answers every query with `answer`. */
async function hostileMember(answer: unknown): Promise<{ address: string; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const listener = net.createServer((socket) => {
    sockets.add(socket);
    const decoder = new FrameDecoder();
    socket.on("error", () => undefined);
    socket.on("data", (chunk) => {
      for (const m of decoder.push(chunk)) {
        // Greeting v2 without a cluster secret: HELLO answered with a nonce, GREETING with no proofs.
        const header = { ...m.header, response: true, error: WireError.NONE };
        const reply: Message =
          m.header.cmd === Command.HELLO
            ? { header, payload: { kind: "hello-response", body: { clusterId: "c", protocolVersion: PROTOCOL_VERSION, nonce: new Uint8Array(32).fill(7) } } }
            : m.header.cmd === Command.GREETING && m.payload.kind === "greeting-request"
              ? {
                  header,
                  payload: {
                    kind: "greeting-response",
                    body: { clusterId: "c", protocolVersion: PROTOCOL_VERSION, serverTerm: 1n, rid: m.payload.body.rid, proof: new Uint8Array(0), resumeSecret: new Uint8Array(0) },
                  },
                }
              : { header, payload: { kind: "admin-response", body: answer } };
        socket.write(encodeMessage(reply));
      }
    });
  });
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
  const { port } = listener.address() as net.AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => listener.close(() => resolve()));
    },
  };
}

test("admin client - an answer that does not fit the admin schema is EPROTO, naming the field", async () => {
  const cases: [unknown, "status" | "locks" | "stats", RegExp][] = [
    [{ term: "3", leader: null, members: [], clients: [], recovering: false }, "status", /status\.term must be an unsigned integer/],
    [{ term: 3, leader: { slot: "0", address: "a" }, members: [], clients: [], recovering: false }, "status", /status\.leader\.slot must be a number/],
    [{ term: 3, leader: null, members: [], clients: [{ rid: 1, name: "n", address: "a" }], recovering: false }, "status", /status\.clients\[0\]\.rid must be a string/],
    [{ term: 3, leader: null, members: [{ slot: 0, address: "a", role: "leader", httpUrl: 7 }], clients: [], recovering: false }, "status", /status\.members\[0\]\.httpUrl must be a string/],
    [{ rows: [{ key: "k", mode: "write", state: "granted", rid: "r" }], more: false }, "locks", /locks\.rows\[0\]\.key must be bin/],
    [{ rows: [{ key: new Uint8Array(1), mode: "exclusive", state: "granted", rid: "r" }], more: false }, "locks", /locks\.rows\[0\]\.mode must be one of/],
    [{ rows: [], more: "no" }, "stats", /stats\.more must be a boolean/],
    [[1, 2], "stats", /stats must be a map/],
  ];
  for (const [answer, query, pattern] of cases) {
    const member = await hostileMember(answer);
    try {
      const admin = await connectAdmin({ servers: [member.address], timeoutMs: 2000 });
      try {
        await assert.rejects(admin.query(query), (e) => e instanceof KeylockError && e.code === "EPROTO" && pattern.test(e.message));
      } finally {
        admin.close();
      }
    } finally {
      await member.close();
    }
  }
  // Unknown keys are ignored (a newer server may add fields), absent optional ones are absent.
  const member = await hostileMember({ term: 3, leader: null, members: [], clients: [], recovering: false, extra: { x: 1 } });
  try {
    const admin = await connectAdmin({ servers: [member.address] });
    assert.deepEqual(await admin.status(), { term: 3n, leader: null, members: [], clients: [], recovering: false });
    admin.close();
  } finally {
    await member.close();
  }
});
