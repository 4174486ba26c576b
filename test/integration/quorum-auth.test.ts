// Authenticated quorum datagrams against real `keylock member` processes on 127.0.0.1 (issue 9, DESIGN §9):
// a cluster formatted with a secret tags every datagram with HMAC-SHA256 under a key derived from the
// secret (io/keys.ts, io/udp.ts). Forged datagrams (valid CRC, a configured slot, no or a wrong tag)
// change nothing, whether they come from a random port or from a stopped member's own address (where
// only the tag stops them); real datagrams captured from the leader and replayed after a failover change
// nothing either (terms only grow); members without the secret, or with another one, refuse to start.
// KEYLOCK_TEST_VERBOSE=1 prints every member line.
import { test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { MemberCluster, runKeylock } from "../support/member-cluster.js";
import { adminQuery } from "../../src/client/admin.js";
import { Command } from "../../src/protocol/messages.js";
import { QUORUM_TAGGED_MESSAGE_BYTES, clusterHash, decodeQuorumMessage, encodeQuorumMessage } from "../../src/io/udp.js";
import { deriveKey } from "../../src/io/keys.js";
import { QUORUM_MESSAGE_TYPES, greatestTerm, type QuorumMessage } from "../../src/core/election.js";
import { openStore } from "../../src/store/open.js";
import { tempDir } from "../support/processes.js";
import { takeWriteLock } from "../support/locks.js";

/** Long, so a loaded machine cannot cause an honest re-election while the test watches the terms. */
const HEARTBEAT_TIMEOUT_MS = 10_000;
const U64_MAX = (1n << 64n) - 1n;
const SECRET = "correct horse battery staple";

function verbose(slot: number, line: string): void {
  if (process.env.KEYLOCK_TEST_VERBOSE) console.log(`[member ${slot}] ${line}`);
}

function writeSecret(dir: string, name: string, secret: string): string {
  const file = join(dir, name);
  writeFileSync(file, `${secret}\n`, { mode: 0o600 });
  return file;
}

function portOf(address: string): number {
  return Number(address.split(":")[1]);
}

/** The greatest term any member has recorded in the store (what a member that adopted a term persists). */
async function recordedTerm(store: string): Promise<{ term: bigint; clusterId: string }> {
  const s = await openStore(store);
  try {
    return { term: greatestTerm(await s.readSlots()), clusterId: (await s.readConfig())!.clusterId };
  } finally {
    await s.close();
  }
}

async function leaderTerm(cluster: MemberCluster): Promise<bigint> {
  const s = (await adminQuery({ servers: cluster.addresses, secret: SECRET }, Command.ADMIN_STATUS)) as { term: bigint | number };
  return BigInt(s.term);
}

/** A client takes a write lock through any member (redirected to the leader) and lets it go; its token. */
function takeLock(cluster: MemberCluster, key: string): Promise<bigint> {
  return takeWriteLock(cluster.addresses, key, SECRET);
}

/** A UDP socket of the test, bound to `port` of 127.0.0.1 (0: any). */
async function udpSocket(port: number): Promise<dgram.Socket> {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((resolve, reject) => socket.once("error", reject).bind(port, "127.0.0.1", () => resolve()));
  return socket;
}

async function sendAll(socket: dgram.Socket, datagrams: Buffer[], ports: number[]): Promise<void> {
  for (const port of ports) {
    for (const d of datagrams) await new Promise<void>((resolve, reject) => socket.send(d, port, "127.0.0.1", (e) => (e ? reject(e) : resolve())));
  }
}

/** Datagrams with a valid CRC and a configured `from`, but no tag, a guessed one or one under another key. */
function forgeries(clusterId: string, terms: bigint[]): Buffer[] {
  const hash = clusterHash(clusterId);
  const wrongKeys = [deriveKey("another secret", clusterId, "keylock quorum v1"), deriveKey(SECRET, "another cluster", "keylock quorum v1")];
  const out: Buffer[] = [];
  for (const type of QUORUM_MESSAGE_TYPES) {
    for (const from of [0, 1, 2]) {
      for (const term of terms) {
        const message: QuorumMessage = { type, term, from };
        const untagged = encodeQuorumMessage(message, hash);
        out.push(untagged);
        out.push(Buffer.concat([encodeQuorumMessage(message, hash, wrongKeys[0]).subarray(0, 32), randomBytes(16)]));
        for (const key of wrongKeys) out.push(encodeQuorumMessage(message, hash, key));
      }
    }
  }
  return out;
}

test(
  "quorum auth - a cluster with a secret serves; forged datagrams, even from a member's own address, and real ones replayed after a failover change nothing",
  { timeout: 180_000 },
  async () => {
    const dir = tempDir("quorum-auth");
    const secretFile = writeSecret(dir.path, "secret", SECRET);
    const cluster = await MemberCluster.format({
      store: `sqlite:${join(dir.path, "keylock.db")}`,
      members: 3,
      heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS,
      secretFile,
      onLine: verbose,
    });
    try {
      await cluster.startAll();
      const leader = await cluster.waitForServing(0, 20_000);
      const firstSeq = await takeLock(cluster, "quorum-auth/1");
      const { term: t1, clusterId } = await recordedTerm(cluster.store);
      assert.equal(await leaderTerm(cluster), t1);
      const ports = cluster.addresses.map(portOf);

      // 1. Forgeries from a random port: dropped (by the tag, and the source rule as well).
      const stranger = await udpSocket(0);
      try {
        await sendAll(stranger, forgeries(clusterId, [t1 + 1n, t1 + 5n, U64_MAX]), ports);
      } finally {
        stranger.close();
      }
      await new Promise((r) => setTimeout(r, 1500));
      for (const slot of [0, 1, 2]) {
        assert.equal(cluster.procs.get(slot)!.alive, true, `member ${slot} still runs:\n${cluster.output(slot)}`);
        assert.match(cluster.output(slot), /dropped a quorum datagram from 127\.0\.0\.1:\d+ that failed authentication: it is untagged/);
        assert.match(cluster.output(slot), /failed authentication: its tag does not verify/);
        assert.doesNotMatch(cluster.output(slot), /no longer leader|above our/);
      }
      assert.equal((await recordedTerm(cluster.store)).term, t1, "no member adopted a forged term");
      assert.equal(cluster.servingLines().length, 1, "the leader was never deposed");

      // 2. Capture real datagrams: with a follower stopped, the test holds its address and receives the
      //    leader's heartbeats, tagged with the real quorum key.
      const follower = [0, 1, 2].find((s) => s !== leader.slot)!;
      assert.equal(await cluster.kill(follower, "SIGTERM"), 0);
      const captured: Buffer[] = [];
      const tap = await udpSocket(ports[follower]!);
      tap.on("message", (bytes) => captured.push(bytes));
      const deadline = Date.now() + 10_000;
      while (captured.length < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      tap.close();
      const key = deriveKey(SECRET, clusterId, "keylock quorum v1");
      const others = new Set([0, 1, 2].filter((s) => s !== follower));
      assert.ok(captured.length >= 5, `captured ${captured.length} datagrams`);
      for (const bytes of captured) {
        assert.equal(bytes.length, QUORUM_TAGGED_MESSAGE_BYTES);
        assert.deepEqual(decodeQuorumMessage(bytes, clusterHash(clusterId), others, key), {
          ok: true,
          message: { type: "HEARTBEAT", term: t1, from: leader.slot },
        });
      }
      await cluster.start(follower);

      // 3. Failover: the leader leaves (resigns); the others elect a new leader at a higher term.
      const failoverAt = performance.now();
      assert.equal(await cluster.kill(leader.slot, "SIGTERM"), 0);
      const next = await cluster.waitForServing(failoverAt, 20_000);
      assert.notEqual(next.slot, leader.slot);
      const t2 = await leaderTerm(cluster);
      assert.ok(t2 > t1, `a new term: ${t1} then ${t2}`);
      const servingBefore = cluster.servingLines().length;
      const secondSeq = await takeLock(cluster, "quorum-auth/1");
      assert.ok(secondSeq > firstSeq);

      // 4. From the old leader's own address (free now, so the source rule lets these through): its real
      //    heartbeats of term t1 replayed, and forgeries claiming its slot. The tag stops the forgeries;
      //    the replays carry an old term and change nothing.
      const running = [0, 1, 2].filter((s) => s !== leader.slot);
      const impostor = await udpSocket(ports[leader.slot]!);
      try {
        const claimingOldLeader = forgeries(clusterId, [t2, t2 + 1n, t2 + 5n, U64_MAX]).filter((d) => d[25] === leader.slot);
        for (let round = 0; round < 3; round++) {
          await sendAll(impostor, captured, running.map((s) => ports[s]!));
          await sendAll(impostor, claimingOldLeader, running.map((s) => ports[s]!));
        }
      } finally {
        impostor.close();
      }
      await new Promise((r) => setTimeout(r, 1500));
      for (const slot of running) {
        assert.equal(cluster.procs.get(slot)!.alive, true, `member ${slot} still runs:\n${cluster.output(slot)}`);
        const fromOldLeader = new RegExp(`dropped a quorum datagram from 127\\.0\\.0\\.1:${ports[leader.slot]} that failed authentication`);
        assert.match(cluster.output(slot), fromOldLeader, `member ${slot} dropped the forgeries from the old leader's address`);
      }
      assert.equal(await leaderTerm(cluster), t2, "the term did not move");
      assert.equal((await recordedTerm(cluster.store)).term, t2, "no member adopted or recorded another term");
      assert.equal(cluster.servingLines().length, servingBefore, "the new leader was never deposed");
      assert.doesNotMatch(cluster.output(next.slot), /no longer leader/);
      assert.ok((await takeLock(cluster, "quorum-auth/1")) > secondSeq, "locks are still granted, fencing tokens grow");
    } finally {
      await cluster.close();
      dir.remove();
    }
  },
);

test("quorum auth - a member without the secret, with another one, or with a secret for a cluster without one refuses to start", { timeout: 120_000 }, async () => {
  const dir = tempDir("quorum-auth-refuse");
  try {
    const secretFile = writeSecret(dir.path, "secret", SECRET);
    const wrongFile = writeSecret(dir.path, "wrong", "not the secret");
    const withSecret = await MemberCluster.format({ store: `sqlite:${join(dir.path, "a.db")}`, members: 3, heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS, secretFile });
    const without = await MemberCluster.format({ store: `sqlite:${join(dir.path, "b.db")}`, members: 1, heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS });
    const member = (store: string, extra: string[]): Promise<{ code: number | null; stderr: string }> =>
      runKeylock(["member", "--store", store, "--slot", "0", ...extra]);

    let result = await member(withSecret.store, []);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /keylock: the cluster was formatted with a secret: pass --secret-file \(store sqlite:.*a\.db\)/);

    result = await member(withSecret.store, ["--secret-file", wrongFile]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /keylock: the secret does not match the one the cluster was formatted with/);

    result = await member(without.store, ["--secret-file", secretFile]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /keylock: the cluster was formatted without a secret: run without --secret-file/);

    const loose = join(dir.path, "loose");
    writeFileSync(loose, `${SECRET}\n`, { mode: 0o640 });
    result = await member(withSecret.store, ["--secret-file", loose]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /can be read by group or others \(mode 0640\); make it owner-only: chmod 600/);

    // None of them recorded anything: refused before BEGIN.
    assert.equal((await recordedTerm(withSecret.store)).term, 0n);
  } finally {
    dir.remove();
  }
});
