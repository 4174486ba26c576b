// Quorum datagrams (src/io/udp.ts): the 32-byte layout with CRC32C, every invalid datagram dropped and
// counted by reason, and real sockets on IPv4 and IPv6 loopback.
import { test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import {
  QUORUM_MESSAGE_BYTES,
  QuorumSocket,
  clusterHash,
  crc32c,
  decodeQuorumMessage,
  encodeQuorumMessage,
} from "../../src/io/udp.js";
import { QUORUM_MESSAGE_TYPES, type QuorumMessage } from "../../src/core/election.js";
import { freePort } from "../support/processes.js";

const HASH = clusterHash("cluster-a");
const FROM_ANY = new Set([0, 1, 2, 14]);

test("udp - crc32c matches the Castagnoli check value (seed ~0, no final inversion)", () => {
  const check = new TextEncoder().encode("123456789");
  // The standard CRC-32C check value is 0xE3069283 with the final inversion; without it, its complement.
  assert.equal((crc32c(check) ^ 0xffffffff) >>> 0, 0xe3069283);
  assert.equal(crc32c(check), 0x1cf96d7c);
  assert.equal(crc32c(new Uint8Array(0)), 0xffffffff);
});

test("udp - every message type and the extreme terms and slots round-trip in 32 bytes", () => {
  for (const type of QUORUM_MESSAGE_TYPES) {
    for (const term of [0n, 1n, (1n << 64n) - 1n]) {
      for (const from of [0, 14]) {
        const message: QuorumMessage = { type, term, from };
        const bytes = encodeQuorumMessage(message, HASH);
        assert.equal(bytes.length, QUORUM_MESSAGE_BYTES);
        assert.deepEqual(decodeQuorumMessage(bytes, HASH, FROM_ANY), { ok: true, message });
      }
    }
  }
  assert.throws(() => encodeQuorumMessage({ type: "VOTE", term: 1n << 64n, from: 0 }, HASH), /not a u64/);
  assert.throws(() => encodeQuorumMessage({ type: "VOTE", term: 1n, from: 15 }, HASH), /outside 0..14/);
});

test("udp - invalid datagrams are refused with their reason", () => {
  const good = encodeQuorumMessage({ type: "HEARTBEAT", term: 7n, from: 1 }, HASH);
  const reseal = (mutate: (b: Buffer) => void): Buffer => {
    const b = Buffer.from(good);
    mutate(b);
    b.writeUInt32LE(crc32c(b.subarray(0, 28)), 28);
    return b;
  };
  const cases: [string, Uint8Array, ReadonlySet<number>][] = [
    ["size", good.subarray(0, 31), FROM_ANY],
    ["size", Buffer.concat([good, Buffer.alloc(1)]), FROM_ANY],
    ["crc", Buffer.from(good).fill(0xaa, 16, 17), FROM_ANY],
    ["cluster", encodeQuorumMessage({ type: "HEARTBEAT", term: 7n, from: 1 }, clusterHash("cluster-b")), FROM_ANY],
    ["version", reseal((b) => b.writeBigUInt64LE(1n, 8)), FROM_ANY],
    ["padding", reseal((b) => b.writeUInt8(1, 27)), FROM_ANY],
    ["type", reseal((b) => b.writeUInt8(4, 24)), FROM_ANY],
    ["type", reseal((b) => b.writeUInt8(255, 24)), FROM_ANY],
    ["slot", reseal((b) => b.writeUInt8(15, 25)), FROM_ANY],
    ["slot", good, new Set([0, 2])],
  ];
  for (const [reason, bytes, from] of cases) {
    assert.deepEqual(decodeQuorumMessage(bytes, HASH, from), { ok: false, reason }, `expected ${reason}`);
  }
});

async function pair(host: string): Promise<{ a: QuorumSocket; b: QuorumSocket; gotB: QuorumMessage[]; portB: number }> {
  const [portA, portB] = [await freePort(), await freePort()];
  const gotB: QuorumMessage[] = [];
  const a = await QuorumSocket.open({
    clusterId: "c",
    self: { slot: 0, host, port: portA },
    peers: [{ slot: 1, host, port: portB }],
    onMessage: () => undefined,
    log: () => undefined,
  });
  const b = await QuorumSocket.open({
    clusterId: "c",
    self: { slot: 1, host, port: portB },
    peers: [{ slot: 0, host, port: portA }],
    onMessage: (m) => gotB.push(m),
    log: () => undefined,
  });
  return { a, b, gotB, portB };
}

async function until(condition: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 5));
  }
}

test("udp - sockets exchange messages on IPv4 loopback; garbage and strangers are counted, not delivered", async () => {
  const { a, b, gotB, portB } = await pair("127.0.0.1");
  try {
    a.broadcast({ type: "REQUEST_VOTE", term: 3n, from: 0 });
    a.send(1, { type: "HEARTBEAT", term: 3n, from: 0 });
    await until(() => gotB.length === 2);
    assert.deepEqual(gotB, [
      { type: "REQUEST_VOTE", term: 3n, from: 0 },
      { type: "HEARTBEAT", term: 3n, from: 0 },
    ]);
    const stranger = dgram.createSocket("udp4");
    const send = (bytes: Uint8Array): Promise<void> =>
      new Promise((resolve, reject) => stranger.send(bytes, portB, "127.0.0.1", (e) => (e ? reject(e) : resolve())));
    await send(Buffer.from("hello"));
    await send(encodeQuorumMessage({ type: "VOTE", term: 1n, from: 0 }, clusterHash("other")));
    await send(encodeQuorumMessage({ type: "VOTE", term: 1n, from: 5 }, clusterHash("c")));
    await until(() => b.stats.dropped.size + b.stats.dropped.cluster + b.stats.dropped.slot === 3);
    stranger.close();
    assert.equal(gotB.length, 2);
    assert.equal(b.stats.received, 2);
    assert.equal(a.stats.sent, 2);
  } finally {
    await a.close();
    await b.close();
  }
});

test("udp - IPv6 loopback works too", async (t) => {
  let sockets: Awaited<ReturnType<typeof pair>>;
  try {
    sockets = await pair("::1");
  } catch (error) {
    t.skip(`no IPv6 loopback here: ${(error as Error).message}`);
    return;
  }
  try {
    sockets.a.send(1, { type: "RESIGNATION", term: 9n, from: 0 });
    await until(() => sockets.gotB.length === 1);
    assert.deepEqual(sockets.gotB, [{ type: "RESIGNATION", term: 9n, from: 0 }]);
  } finally {
    await sockets.a.close();
    await sockets.b.close();
  }
});

test("udp - binding an address in use fails (a second member in one slot)", async () => {
  const port = await freePort();
  const first = await QuorumSocket.open({ clusterId: "c", self: { slot: 0, host: "127.0.0.1", port }, peers: [], onMessage: () => undefined, log: () => undefined });
  try {
    await assert.rejects(
      QuorumSocket.open({ clusterId: "c", self: { slot: 0, host: "127.0.0.1", port }, peers: [], onMessage: () => undefined, log: () => undefined }),
      /EADDRINUSE/,
    );
  } finally {
    await first.close();
  }
});
