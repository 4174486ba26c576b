// Forged quorum datagrams against real `keylock member` processes on 127.0.0.1 (issue 8 item 3,
// DESIGN §9): the three datagrams (HEARTBEAT, term 2^64-1, a configured `from` slot, from any
// port) used to make every member adopt and persist the term, then exit on the next election and on
// every restart. Now they are dropped (source rule in io/udp.ts; the term bound in core/election.ts is
// shown with a socket at the slot's own address in test/unit/election-udp.test.ts), and a store left
// bricked by the old bug is refused at start with a message naming the repair, which works.
// KEYLOCK_TEST_VERBOSE=1 prints every member line.
import { test } from "node:test";
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { join } from "node:path";
import Database from "better-sqlite3";
import { MemberCluster, runKeylock } from "../support/member-cluster.js";
import { adminQuery } from "../../src/client/admin.js";
import { Command } from "../../src/protocol/messages.js";
import { clusterHash, encodeQuorumMessage } from "../../src/io/udp.js";
import { QUORUM_MESSAGE_TYPES } from "../../src/core/election.js";
import { TERM_MAX } from "../../src/core/limits.js";
import { tempDir } from "../support/processes.js";
import { takeWriteLock } from "../support/locks.js";

/** Long, so a loaded machine cannot cause an honest re-election while the test watches the term. */
const HEARTBEAT_TIMEOUT_MS = 10_000;
const U64_MAX = (1n << 64n) - 1n;

function verbose(slot: number, line: string): void {
  if (process.env.KEYLOCK_TEST_VERBOSE) console.log(`[member ${slot}] ${line}`);
}

async function clusterId(store: string): Promise<string> {
  const { openStore } = await import("../../src/store/open.js");
  const s = await openStore(store);
  try {
    return (await s.readConfig())!.clusterId;
  } finally {
    await s.close();
  }
}

/** Sends each datagram to every member from a fresh socket on a random port of 127.0.0.1. */
async function sendToAll(cluster: MemberCluster, datagrams: Buffer[]): Promise<void> {
  const socket = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", () => resolve()));
  try {
    for (const address of cluster.addresses) {
      const port = Number(address.split(":")[1]);
      for (const d of datagrams) {
        await new Promise<void>((resolve, reject) => socket.send(d, port, "127.0.0.1", (e) => (e ? reject(e) : resolve())));
      }
    }
  } finally {
    socket.close();
  }
}

async function term(cluster: MemberCluster, slot: number): Promise<bigint> {
  const s = (await adminQuery({ servers: [cluster.addresses[slot]!] }, Command.ADMIN_STATUS)) as { term: bigint | number };
  return BigInt(s.term);
}

/** A client takes a write lock through any member (redirected to the leader) and lets it go; its token. */
function takeLock(cluster: MemberCluster, key: string): Promise<bigint> {
  return takeWriteLock(cluster.addresses, key);
}

test("quorum - the issue's forged datagrams change nothing: members run, terms stay sane, locks are granted, every member restarts", { timeout: 120_000 }, async () => {
  const dir = tempDir("hostile-quorum");
  const cluster = await MemberCluster.format({
    store: `sqlite:${join(dir.path, "keylock.db")}`,
    members: 3,
    heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS,
    onLine: verbose,
  });
  try {
    await cluster.startAll();
    const leader = await cluster.waitForServing(0, 20_000);
    const before = await term(cluster, leader.slot);
    const firstSeq = await takeLock(cluster, "hostile/1");
    const hash = clusterHash(await clusterId(cluster.store));

    // The three datagrams (and more: every configured slot id, every message type).
    const forged: Buffer[] = [];
    for (let i = 0; i < 3; i++) forged.push(encodeQuorumMessage({ type: "HEARTBEAT", term: U64_MAX, from: i % 3 }, hash));
    for (const type of QUORUM_MESSAGE_TYPES) {
      for (const from of [0, 1, 2]) {
        for (const t of [U64_MAX, TERM_MAX, before + 1n, before + 5n]) forged.push(encodeQuorumMessage({ type, term: t, from }, hash));
      }
    }
    // Replayed old datagrams: what the members sent in this and earlier terms.
    const replayed: Buffer[] = [];
    for (const type of QUORUM_MESSAGE_TYPES) {
      for (const from of [0, 1, 2]) for (let t = 0n; t <= before; t++) replayed.push(encodeQuorumMessage({ type, term: t, from }, hash));
    }
    await sendToAll(cluster, forged);
    await sendToAll(cluster, replayed);
    // Wait past an election timeout and a few heartbeats: a member that adopted a forged term would
    // have demoted the leader or stood for election by now.
    await new Promise((r) => setTimeout(r, 1500));

    for (const slot of [0, 1, 2]) {
      assert.equal(cluster.procs.get(slot)!.alive, true, `member ${slot} still runs:\n${cluster.output(slot)}`);
      assert.match(cluster.output(slot), /dropped a quorum HEARTBEAT claiming slot \d from 127\.0\.0\.1:\d+, which is not slot \d's address/);
      assert.doesNotMatch(cluster.output(slot), /no longer takes part|no longer leader/);
      assert.equal(await term(cluster, slot), before, `member ${slot}'s term is unchanged`);
    }
    assert.equal(cluster.servingLines().length, 1, "the leader was never deposed");
    const secondSeq = await takeLock(cluster, "hostile/1");
    assert.ok(secondSeq > firstSeq, `fencing tokens still grow (${firstSeq} then ${secondSeq})`);

    // Every member restarts (the old bug made every restart exit again) and the cluster serves.
    for (const slot of [0, 1, 2]) assert.equal(await cluster.kill(slot, "SIGTERM"), 0, `member ${slot} exits cleanly`);
    const restartedAt = performance.now();
    await cluster.startAll();
    const next = await cluster.waitForServing(restartedAt, 20_000);
    const after = await term(cluster, next.slot);
    assert.ok(after > before && after <= before + 10n, `a sane new term: ${before} then ${after}`);
    assert.ok((await takeLock(cluster, "hostile/1")) > secondSeq);
  } finally {
    await cluster.close();
    dir.remove();
  }
});

test("quorum - a store bricked by the old bug (terms above TERM_MAX) is refused at start naming the repair, and the repair works", { timeout: 120_000 }, async () => {
  const dir = tempDir("bricked-store");
  const path = join(dir.path, "keylock.db");
  const cluster = await MemberCluster.format({ store: `sqlite:${path}`, members: 3, heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS, onLine: verbose });
  try {
    await cluster.startAll();
    await cluster.waitForServing(0, 20_000);
    const seq = await takeLock(cluster, "bricked/1");
    for (const slot of [0, 1, 2]) await cluster.kill(slot, "SIGTERM");

    // What the old bug left: every member adopted and persisted 2^64-1 (as TERM, then BEGIN and END on restarts).
    const db = new Database(path);
    for (const kind of ["TERM", "BEGIN", "END"]) {
      db.prepare("UPDATE keylock_slot_events SET term = 'ffffffffffffffff' WHERE kind = ?").run(kind);
    }
    db.close();

    const refused = await runKeylock(["member", "--store", cluster.store, "--slot", "1", "--heartbeat-timeout-ms", String(HEARTBEAT_TIMEOUT_MS)]);
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /records terms above TERM_MAX 4611686018427387903 \(slot 0 BEGIN term 18446744073709551615; /);
    assert.match(refused.stderr, /Stop every member, run sqlite3 .*keylock\.db "DELETE FROM keylock_slot_events WHERE term > '3fffffffffffffff'", then start the members again/);

    // The repair, exactly as the message names it.
    const statement = /"(DELETE FROM keylock_slot_events WHERE term > '[0-9a-f]{16}')"/.exec(refused.stderr)![1]!;
    const repair = new Database(path);
    repair.exec(statement);
    repair.close();

    const restartedAt = performance.now();
    await cluster.startAll();
    const leader = await cluster.waitForServing(restartedAt, 20_000);
    assert.ok((await term(cluster, leader.slot)) <= 100n, "terms are back in range");
    assert.ok((await takeLock(cluster, "bricked/1")) > seq, "fencing tokens still grow after the repair");
  } finally {
    await cluster.close();
    dir.remove();
  }
});
