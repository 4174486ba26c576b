// Quorum datagrams (src/io/udp.ts): the 32-byte layout with CRC32C, every invalid datagram dropped and
// counted by reason, the source rule (a slot speaks only from its configured address), real sockets
// on IPv4 and IPv6 loopback, and with a cluster secret the 48-byte tagged layout, the key derivation
// (src/io/keys.ts) and the "auth" drops.
import { test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { createHmac, randomBytes } from "node:crypto";
import {
  QUORUM_MESSAGE_BYTES,
  QUORUM_TAGGED_MESSAGE_BYTES,
  quorumTag,
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
import { KEY_PURPOSES, deriveKey, secretDigest, secretRefusal, type KeyPurpose } from "../../src/io/keys.js";

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
  // If the second socket cannot open (the IPv6 test skips then), the first must not stay open: a bound
  // UDP socket keeps this test process alive after its last test.
  const b = await QuorumSocket.open({
    clusterId: "c",
    self: { slot: 1, host, port: portB },
    peers: [{ slot: 0, host, port: portA }],
    onMessage: (m) => gotB.push(m),
    log: () => undefined,
  }).catch(async (error: unknown) => {
    await a.close();
    throw error;
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

// ---------------------------------------------------------------------------------------------------
// Authenticated datagrams (issue 9, DESIGN §9): with a cluster secret every datagram carries a 16-byte
// HMAC-SHA256 tag under the quorum key HKDF(secret, cluster id, "keylock quorum v1").

const SECRET = "correct horse battery staple";
const KEY_C = deriveKey(SECRET, "c", "keylock quorum v1");
const HASH_C = clusterHash("c");

test("keys - derivation is HKDF-SHA256 (RFC 5869), deterministic, and separated by purpose, cluster and secret", () => {
  // HKDF with one output block, computed by hand: PRK = HMAC(salt, ikm); OKM = HMAC(PRK, info || 0x01).
  const prk = createHmac("sha256", Buffer.from("c", "utf8")).update(Buffer.from(SECRET, "utf8")).digest();
  const okm = createHmac("sha256", prk).update(Buffer.concat([Buffer.from("keylock quorum v1"), Buffer.from([1])])).digest();
  assert.deepEqual(KEY_C, okm);
  assert.equal(KEY_C.length, 32);
  assert.deepEqual(deriveKey(SECRET, "c", "keylock quorum v1"), KEY_C, "deterministic");
  const others = [
    deriveKey(SECRET, "c", "keylock greeting v2"),
    deriveKey(SECRET, "d", "keylock quorum v1"),
    deriveKey(`${SECRET}!`, "c", "keylock quorum v1"),
  ];
  for (const other of others) assert.notDeepEqual(other, KEY_C);
  assert.notDeepEqual(others[0], others[1]);
  assert.deepEqual([...KEY_PURPOSES], ["keylock quorum v1", "keylock greeting v2"]);
  assert.throws(() => deriveKey(SECRET, "c", "keylock other" as KeyPurpose), /unknown key purpose/);
});

test("keys - a member's secret is checked against the store's digest", () => {
  const digest = secretDigest(SECRET);
  assert.match(digest, /^[0-9a-f]{64}$/);
  assert.equal(secretRefusal(digest, SECRET), null);
  assert.equal(secretRefusal(null, undefined), null);
  assert.equal(secretRefusal(digest, undefined), "the cluster was formatted with a secret: pass --secret-file");
  assert.equal(secretRefusal(digest, "wrong"), "the secret does not match the one the cluster was formatted with");
  assert.match(secretRefusal(null, SECRET)!, /formatted without a secret/);
});

test("udp - tagged datagrams: every type round-trips in 48 bytes, version 1, the first 32 bytes as untagged but for the version", () => {
  for (const type of QUORUM_MESSAGE_TYPES) {
    for (const term of [0n, 1n, (1n << 64n) - 1n]) {
      for (const from of [0, 14]) {
        const message: QuorumMessage = { type, term, from };
        const bytes = encodeQuorumMessage(message, HASH_C, KEY_C);
        assert.equal(bytes.length, QUORUM_TAGGED_MESSAGE_BYTES);
        assert.equal(bytes.readBigUInt64LE(8), 1n);
        assert.deepEqual(bytes.subarray(32), quorumTag(KEY_C, bytes.subarray(0, 32)));
        const plain = encodeQuorumMessage(message, HASH_C);
        assert.deepEqual(bytes.subarray(16, 28), plain.subarray(16, 28));
        assert.deepEqual(decodeQuorumMessage(bytes, HASH_C, FROM_ANY, KEY_C), { ok: true, message });
      }
    }
  }
});

test("udp - forged, foreign, truncated and untagged datagrams are dropped as 'auth' by a cluster with a secret", () => {
  const message: QuorumMessage = { type: "HEARTBEAT", term: 7n, from: 1 };
  const good = encodeQuorumMessage(message, HASH_C, KEY_C);
  const flipped = Buffer.from(good);
  flipped[47] = flipped[47]! ^ 1;
  const cases: [string, Uint8Array][] = [
    ["a forged tag (one bit off)", flipped],
    ["a forged tag (zeros)", Buffer.concat([good.subarray(0, 32), Buffer.alloc(16)])],
    ["a forged tag (random)", Buffer.concat([good.subarray(0, 32), randomBytes(16)])],
    ["another cluster's key, our cluster hash", encodeQuorumMessage(message, HASH_C, deriveKey(SECRET, "d", "keylock quorum v1"))],
    ["another cluster altogether", encodeQuorumMessage(message, clusterHash("d"), deriveKey(SECRET, "d", "keylock quorum v1"))],
    ["another secret", encodeQuorumMessage(message, HASH_C, deriveKey("another secret", "c", "keylock quorum v1"))],
    ["the greeting key", encodeQuorumMessage(message, HASH_C, deriveKey(SECRET, "c", "keylock greeting v2"))],
    ["the tag's key taken from the store's digest", encodeQuorumMessage(message, HASH_C, Buffer.from(secretDigest(SECRET), "hex"))],
    ["a truncated tag (47 bytes)", good.subarray(0, 47)],
    ["a truncated tag (33 bytes)", good.subarray(0, 33)],
    ["an untagged datagram", encodeQuorumMessage(message, HASH_C)],
    ["an untagged datagram, version 1", reseal(encodeQuorumMessage(message, HASH_C), (b) => b.writeBigUInt64LE(1n, 8))],
    ["a longer datagram", Buffer.concat([good, Buffer.alloc(1)])],
    ["empty", Buffer.alloc(0)],
    ["a tagged datagram whose head was changed after tagging (term)", reseal(good, (b) => b.writeBigUInt64LE(8n, 16))],
    ["a tagged datagram whose head was changed after tagging (from)", reseal(good, (b) => b.writeUInt8(2, 25))],
  ];
  for (const [what, bytes] of cases) {
    assert.deepEqual(decodeQuorumMessage(bytes, HASH_C, FROM_ANY, KEY_C), { ok: false, reason: "auth" }, what);
  }
  // A tagged datagram reaching a cluster without a secret: its sender holds a secret we do not.
  assert.deepEqual(decodeQuorumMessage(good, HASH_C, FROM_ANY), { ok: false, reason: "auth" });
  // Only a key holder can get past the tag; the other checks still apply to what it sends.
  const version0 = encodeQuorumMessage(message, HASH_C);
  assert.deepEqual(decodeQuorumMessage(Buffer.concat([version0, quorumTag(KEY_C, version0)]), HASH_C, FROM_ANY, KEY_C), { ok: false, reason: "version" });
  assert.deepEqual(decodeQuorumMessage(good, HASH_C, new Set([0, 2]), KEY_C), { ok: false, reason: "slot" });
});

/** `b` with `mutate` applied to its first 32 bytes and the CRC recomputed (any tag kept as it was). */
function reseal(b: Buffer, mutate: (b: Buffer) => void): Buffer {
  const out = Buffer.from(b);
  mutate(out);
  out.writeUInt32LE(crc32c(out.subarray(0, 28)), 28);
  return out;
}

test("udp - sockets of a cluster with a secret exchange tagged datagrams; a socket without the key is not heard, nor hears them", async () => {
  const [portA, portB, portC] = [await freePort(), await freePort(), await freePort()];
  const got: { b: QuorumMessage[]; c: QuorumMessage[] } = { b: [], c: [] };
  const open = (slot: number, port: number, key: Buffer | null, into: QuorumMessage[]): Promise<QuorumSocket> =>
    QuorumSocket.open({
      clusterId: "c",
      self: { slot, host: "127.0.0.1", port },
      peers: [
        { slot: 0, host: "127.0.0.1", port: portA },
        { slot: 1, host: "127.0.0.1", port: portB },
        { slot: 2, host: "127.0.0.1", port: portC },
      ].filter((p) => p.slot !== slot),
      onMessage: (m) => into.push(m),
      log: () => undefined,
      key,
    });
  const a = await open(0, portA, KEY_C, []);
  const b = await open(1, portB, KEY_C, got.b);
  const c = await open(2, portC, null, got.c); // a member that was not given the secret
  try {
    a.broadcast({ type: "HEARTBEAT", term: 4n, from: 0 });
    c.broadcast({ type: "REQUEST_VOTE", term: 5n, from: 2 });
    await until(() => got.b.length === 1 && b.stats.dropped.auth === 1 && c.stats.dropped.auth === 1);
    assert.deepEqual(got.b, [{ type: "HEARTBEAT", term: 4n, from: 0 }]);
    assert.deepEqual(got.c, []);
  } finally {
    await Promise.all([a.close(), b.close(), c.close()]);
  }
});

test("udp - receive path with a secret: from the slot's own address, only a datagram with a valid tag is delivered; an old one replayed changes nothing", async () => {
  // The tag rule on its own: these datagrams pass the source rule (they come from slot 0's address,
  // which only a process holding that port can send from: here the test holds it, slot 0 not running).
  const slot0 = { host: "127.0.0.1", port: await freePort() };
  const port = await freePort();
  const got: QuorumMessage[] = [];
  const logs: string[] = [];
  const socket = await QuorumSocket.open({
    clusterId: "c",
    self: { slot: 1, host: "127.0.0.1", port },
    peers: [{ slot: 0, ...slot0 }, { slot: 2, host: "127.0.0.1", port: await freePort() }],
    onMessage: (m) => got.push(m),
    log: (line) => logs.push(line),
    key: KEY_C,
  });
  const election = new Election({ slot: 1, slots: [0, 1, 2], heartbeatTimeoutMs: 2000, startTerm: 3n, liveLeaderRecorded: false, random: () => 0 });
  election.begin(0);
  const fromSlot0 = { address: "127.0.0.1", port: slot0.port };
  try {
    const forged: Buffer[] = [];
    for (const type of QUORUM_MESSAGE_TYPES) {
      const head = encodeQuorumMessage({ type, term: 4n, from: 0 }, HASH_C);
      const head1 = reseal(head, (b) => b.writeBigUInt64LE(1n, 8));
      forged.push(
        head, // untagged
        Buffer.concat([head1, randomBytes(16)]), // a guessed tag
        encodeQuorumMessage({ type, term: 4n, from: 0 }, HASH_C, deriveKey("another secret", "c", "keylock quorum v1")),
        encodeQuorumMessage({ type, term: 4n, from: 0 }, HASH_C, deriveKey(SECRET, "d", "keylock quorum v1")),
      );
    }
    for (const d of forged) await sendFrom(fromSlot0, d, port);
    await until(() => socket.stats.dropped.auth === forged.length);
    assert.deepEqual(got, []);
    assert.equal(socket.stats.dropped.source, 0, "they all came from slot 0's address");
    assert.equal(logs.filter((l) => /dropped a quorum datagram from 127\.0\.0\.1:\d+ that failed authentication/.test(l)).length, 5, "logged on the 1st, 2nd, 4th, 8th, 16th");
    assert.match(logs.join("\n"), /it is untagged \(its sender has no secret\)/);
    assert.match(logs.join("\n"), /its tag does not verify/);

    // A real tagged datagram of slot 0 passes, and the election takes it.
    await sendFrom(fromSlot0, encodeQuorumMessage({ type: "HEARTBEAT", term: 3n, from: 0 }, HASH_C, KEY_C), port);
    await until(() => got.length === 1);
    election.receive(got[0]!, 1);
    assert.equal(election.status().leader, 0);

    // Datagrams slot 0 really sent in earlier terms (valid tags), replayed now: every type, terms 0..2.
    const before = election.status();
    let delivered = got.length;
    for (const type of QUORUM_MESSAGE_TYPES) {
      for (let term = 0n; term < 3n; term++) {
        await sendFrom(fromSlot0, encodeQuorumMessage({ type, term, from: 0 }, HASH_C, KEY_C), port);
        await until(() => got.length === delivered + 1);
        delivered++;
        assert.deepEqual(election.receive(got.at(-1)!, 2), [], `${type} of term ${term} does nothing`);
      }
    }
    const after = election.status();
    assert.equal(after.term, 3n);
    assert.equal(after.role, before.role);
    assert.equal(after.leader, 0);
  } finally {
    await socket.close();
  }
});

test("udp - over an injected Datagrams (io/world.ts) the same rules run: the socket binds through it, a stranger is dropped as 'source', the slot's address is heard, sends go out to peers", async () => {
  const sent: { bytes: Uint8Array; port: number; address: string }[] = [];
  let deliver: ((bytes: Uint8Array, from: { address: string; port: number }) => void) | null = null;
  let bound: { address: string; port: number } | null = null;
  let closed = false;
  const got: QuorumMessage[] = [];
  const socket = await QuorumSocket.open({
    clusterId: "cluster-a",
    self: { slot: 0, host: "10.0.0.1", port: 7000 },
    peers: [{ slot: 1, host: "10.0.0.2", port: 7000 }],
    onMessage: (message) => got.push(message),
    log: () => undefined,
    datagrams: {
      bind: (local, onMessage) => {
        bound = { address: local.address, port: local.port };
        deliver = onMessage;
        return Promise.resolve({
          send: (bytes, port, address, done) => {
            sent.push({ bytes, port, address });
            done(null);
          },
          close: () => {
            closed = true;
            return Promise.resolve();
          },
        });
      },
    },
  });
  assert.deepEqual(bound, { address: "10.0.0.1", port: 7000 });
  const heartbeat = encodeQuorumMessage({ type: "HEARTBEAT", term: 3n, from: 1 }, HASH);
  deliver!(heartbeat, { address: "10.0.0.9", port: 7000 });
  deliver!(heartbeat, { address: "10.0.0.2", port: 7001 });
  assert.equal(socket.stats.dropped.source, 2);
  assert.deepEqual(got, []);
  deliver!(heartbeat, { address: "10.0.0.2", port: 7000 });
  assert.deepEqual(got, [{ type: "HEARTBEAT", term: 3n, from: 1 }]);
  socket.broadcast({ type: "REQUEST_VOTE", term: 4n, from: 0 });
  assert.equal(sent.length, 1);
  assert.equal(sent[0]!.address, "10.0.0.2");
  assert.deepEqual(decodeQuorumMessage(sent[0]!.bytes, HASH, new Set([0])), { ok: true, message: { type: "REQUEST_VOTE", term: 4n, from: 0 } });
  await socket.close();
  assert.ok(closed);
});
