// Quorum datagrams (src/io/udp.ts): the 32-byte layout with CRC32C, every invalid datagram dropped and
// counted by reason, the source rule (a slot speaks only from its configured address), and real sockets
// on IPv4 and IPv6 loopback.
import { test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import {
  QUORUM_MESSAGE_BYTES,
  QuorumSocket,
  canonicalAddress,
  clusterHash,
  crc32c,
  decodeQuorumMessage,
  encodeQuorumMessage,
  sourceMatches,
  type SlotSource,
} from "../../src/io/udp.js";
import { Election, QUORUM_MESSAGE_TYPES, type QuorumMessage } from "../../src/core/election.js";
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
    // well formed, from a configured slot, but not from that slot's address
    await send(encodeQuorumMessage({ type: "VOTE", term: 3n, from: 0 }, clusterHash("c")));
    await until(() => b.stats.dropped.size + b.stats.dropped.cluster + b.stats.dropped.slot + b.stats.dropped.source === 4);
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

// ---------------------------------------------------------------------------------------------------
// Source rule (issue 8 item 3, DESIGN §9): a datagram speaks for a slot only from that slot's address.

test("udp - canonical addresses: IPv4-mapped IPv6 is IPv4, IPv6 is RFC 5952, zones kept", () => {
  const cases: [string, string][] = [
    ["127.0.0.1", "127.0.0.1"],
    ["::ffff:127.0.0.1", "127.0.0.1"],
    ["::FFFF:7f00:0001", "127.0.0.1"],
    ["0:0:0:0:0:ffff:10.1.2.3", "10.1.2.3"],
    ["0:0:0:0:0:0:0:1", "::1"],
    ["::1", "::1"],
    ["0::0", "::"],
    ["2001:DB8:0:0:0:0:0:1", "2001:db8::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:0db8:0000:0001:0000:0000:0000:0001", "2001:db8:0:1::1"],
    ["2001:db8:1:2:3:4:5:6", "2001:db8:1:2:3:4:5:6"],
    ["2001:db8:0:2:3:4:5:6", "2001:db8:0:2:3:4:5:6"],
    ["::1.2.3.4", "::102:304"],
    ["fe80::0001%eth0", "fe80::1%eth0"],
    ["not-an-address", "not-an-address"],
  ];
  for (const [input, expected] of cases) assert.equal(canonicalAddress(input), expected, input);
});

test("udp - source rule: the claimed slot's address and port, nothing else", () => {
  const slot0: SlotSource = { addresses: new Set(["127.0.0.1", "::1"]), port: 7001 };
  assert.equal(sourceMatches(slot0, "127.0.0.1", 7001), true);
  assert.equal(sourceMatches(slot0, "::ffff:127.0.0.1", 7001), true);
  assert.equal(sourceMatches(slot0, "0:0:0:0:0:0:0:1", 7001), true);
  assert.equal(sourceMatches(slot0, "127.0.0.1", 7002), false, "another port on the right host");
  assert.equal(sourceMatches(slot0, "127.0.0.2", 7001), false, "the right port on another host");
  assert.equal(sourceMatches(undefined, "127.0.0.1", 7001), false, "a slot with no known source");
});

/** A member's quorum socket in slot 1 of a cluster whose slot 0 is at `slot0`, and what it delivers. */
async function member1(slot0: { host: string; port: number }): Promise<{ socket: QuorumSocket; got: QuorumMessage[]; port: number; logs: string[] }> {
  const port = await freePort();
  const got: QuorumMessage[] = [];
  const logs: string[] = [];
  const socket = await QuorumSocket.open({
    clusterId: "c",
    self: { slot: 1, host: "127.0.0.1", port },
    peers: [{ slot: 0, ...slot0 }, { slot: 2, host: "127.0.0.1", port: await freePort() }],
    onMessage: (m) => got.push(m),
    log: (line) => logs.push(line),
  });
  return { socket, got, port, logs };
}

async function sendFrom(bind: { address: string; port: number } | null, bytes: Uint8Array, port: number, host = "127.0.0.1"): Promise<void> {
  const s = dgram.createSocket("udp4");
  try {
    if (bind !== null) await new Promise<void>((resolve, reject) => s.once("error", reject).bind(bind, () => resolve()));
    await new Promise<void>((resolve, reject) => s.send(bytes, port, host, (e) => (e ? reject(e) : resolve())));
  } finally {
    s.close();
  }
}

const FORGED = encodeQuorumMessage({ type: "HEARTBEAT", term: (1n << 64n) - 1n, from: 0 }, clusterHash("c"));

test("udp - the issue's forged HEARTBEAT from a configured slot id but a random port is dropped as 'source'", async () => {
  const slot0 = { host: "127.0.0.1", port: await freePort() };
  const m = await member1(slot0);
  try {
    for (let i = 0; i < 3; i++) await sendFrom(null, FORGED, m.port);
    // and from the right host on every other port it might guess, here a few
    for (let i = 0; i < 3; i++) await sendFrom({ address: "127.0.0.1", port: await freePort() }, FORGED, m.port);
    await until(() => m.socket.stats.dropped.source === 6);
    assert.deepEqual(m.got, []);
    assert.equal(m.socket.stats.received, 0);
    // logged on the 1st, 2nd and 4th drop only
    assert.equal(m.logs.filter((l) => /dropped a quorum HEARTBEAT claiming slot 0 from 127\.0\.0\.1:\d+, which is not slot 0's address/.test(l)).length, 3);
  } finally {
    await m.socket.close();
  }
});

test("udp - from the slot's own address the datagram passes, and the election drops its out-of-range term", async () => {
  // A process that holds slot 0's address (slot 0's member is not running) is the only one that can
  // get past the source rule: the term bound in the election is what stops it then.
  const slot0 = { host: "127.0.0.1", port: await freePort() };
  const m = await member1(slot0);
  const election = new Election({ slot: 1, slots: [0, 1, 2], heartbeatTimeoutMs: 2000, startTerm: 3n, liveLeaderRecorded: false, random: () => 0 });
  election.begin(0);
  try {
    await sendFrom({ address: "127.0.0.1", port: slot0.port }, FORGED, m.port);
    await until(() => m.got.length === 1);
    assert.equal(m.socket.stats.dropped.source, 0);
    const effects = election.receive(m.got[0]!, 1);
    assert.deepEqual(effects.map((e) => e.type), ["log"]);
    assert.equal(election.currentTerm, 3n);
    assert.deepEqual(election.status().dropped, { "term-range": 1, "term-jump": 0 });
    // a replayed old datagram from the right address changes nothing either
    await sendFrom({ address: "127.0.0.1", port: slot0.port }, encodeQuorumMessage({ type: "REQUEST_VOTE", term: 2n, from: 0 }, clusterHash("c")), m.port);
    await until(() => m.got.length === 2);
    assert.deepEqual(election.receive(m.got[1]!, 2), []);
    assert.equal(election.currentTerm, 3n);
  } finally {
    await m.socket.close();
  }
});

test("udp - a slot named by hostname or configured with a wildcard address is matched by what it resolves to", async () => {
  for (const host of ["localhost", "0.0.0.0"]) {
    const slot0 = { host, port: await freePort() };
    const m = await member1(slot0);
    try {
      const hello = encodeQuorumMessage({ type: "VOTE", term: 1n, from: 0 }, clusterHash("c"));
      await sendFrom({ address: "127.0.0.1", port: slot0.port }, hello, m.port);
      await until(() => m.got.length === 1);
      await sendFrom(null, hello, m.port);
      await until(() => m.socket.stats.dropped.source === 1);
      assert.equal(m.got.length, 1, host);
    } finally {
      await m.socket.close();
    }
  }
});
