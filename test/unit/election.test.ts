// The election's pure helpers and invariants (src/core/election.ts) outside the transcripts: votes
// needed, slot-record rules (reference §7.3, §7.6, §7.7), the ELECT outcome rule, option validation,
// and a randomized run of the machine against itself checking one vote per term and role invariants.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  ELECTION_TIMEOUT_JITTER_MS,
  ELECTION_TIMEOUT_MIN_MS,
  Election,
  HEARTBEAT_INTERVAL_MS,
  electOutcome,
  greatestTerm,
  leadersToFence,
  liveLeaderRecorded,
  recordedLeader,
  votesNeeded,
  type ElectionEffect,
  type RecordedSlot,
  type SlotEventKind,
} from "../../src/core/election.js";
import { Prng } from "../../sim/prng.js";

function slot(n: number, events: Partial<Record<SlotEventKind, [term: number, rid: number]>>): RecordedSlot {
  return {
    slot: n,
    events: Object.fromEntries(Object.entries(events).map(([k, [term, rid]]) => [k, { term: BigInt(term), rid: BigInt(rid) }])),
  };
}

test("election - votes needed: 1 below three slots, else a majority", () => {
  const expected = [0, 1, 1, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8];
  for (let n = 1; n <= 15; n++) assert.equal(votesNeeded(n), expected[n], `${n} slots`);
});

test("election - options are validated (slots, own slot, heartbeat timeout range)", () => {
  const base = { slot: 0, slots: [0, 1, 2], heartbeatTimeoutMs: 10_000, startTerm: 0n, liveLeaderRecorded: false, random: () => 0 };
  assert.doesNotThrow(() => new Election(base));
  assert.throws(() => new Election({ ...base, slot: 3 }), /slot 3 is not configured; configured slots: 0, 1, 2/);
  assert.throws(() => new Election({ ...base, slots: [0, 0, 1] }), /configured twice/);
  assert.throws(() => new Election({ ...base, slots: [0, 15] }), /outside 0..14/);
  assert.throws(() => new Election({ ...base, slots: [] }), /1..15 slots/);
  assert.throws(() => new Election({ ...base, heartbeatTimeoutMs: 100 }), /heartbeat timeout 100 ms is outside 2000..60000/);
  assert.throws(() => new Election({ ...base, heartbeatTimeoutMs: 60_001 }), /outside/);
});

test("election - election timeouts are 250 ms plus a drawn jitter below 100 ms", () => {
  for (const r of [0, 0.5, 0.999999, 1]) {
    const m = new Election({ slot: 0, slots: [0, 1, 2], heartbeatTimeoutMs: 2000, startTerm: 0n, liveLeaderRecorded: false, random: () => r });
    m.begin(1000);
    const wait = m.deadlineMs! - 1000;
    assert.ok(wait >= ELECTION_TIMEOUT_MIN_MS && wait < ELECTION_TIMEOUT_MIN_MS + ELECTION_TIMEOUT_JITTER_MS, `r=${r}: ${wait}`);
  }
});

test("election - B42: the starting term is the greatest term recorded in any event of any slot", () => {
  assert.equal(greatestTerm([]), 0n);
  assert.equal(greatestTerm([slot(0, { BEGIN: [3, 1], TERM: [4, 1] }), slot(2, { STOP: [9, 2], ELECT: [7, 2] })]), 9n);
});

test("election - live leaders: ELECT newer than STOP; our own slot's stale ELECT does not count", () => {
  const records = [slot(0, { ELECT: [5, 1], STOP: [5, 1] }), slot(1, { ELECT: [6, 2], STOP: [4, 2] }), slot(2, { ELECT: [7, 3] })];
  assert.equal(liveLeaderRecorded(records, 0), true);
  assert.equal(liveLeaderRecorded([slot(0, { ELECT: [5, 1] })], 0), false, "own slot's predecessor");
  assert.equal(liveLeaderRecorded([slot(0, { ELECT: [5, 1], STOP: [5, 1] })], 1), false);
  assert.deepEqual(recordedLeader(records), { slot: 2, term: 7n });
  assert.equal(recordedLeader([slot(0, { ELECT: [5, 1], STOP: [6, 1] })]), null);
});

test("election - §7.7: previous leaders to fence, with the FENCE floor, own rid and own-slot flag", () => {
  const self = { slot: 0, term: 10n, rid: 100n };
  const records = [
    slot(0, { ELECT: [8, 50], STOP: [2, 50] }), // our slot's predecessor (other rid): flagged ownSlot
    slot(1, { ELECT: [6, 11], STOP: [6, 11] }), // stopped: nothing
    slot(2, { ELECT: [9, 22], FENCE: [7, 21], STOP: [3, 21] }), // ELECT live, and an older FENCE never stopped
    slot(3, { ELECT: [4, 33] }), // below the FENCE floor (7): already fenced by that server
    slot(4, { ELECT: [11, 44] }), // above our term: not ours to fence (its ELECT would have refused ours)
    slot(5, { ELECT: [10, 55] }), // our own term in another slot: the tie loser, never starts
    slot(6, { ELECT: [7, 100] }), // our own rid: never
  ];
  const out = leadersToFence(records, self).map((c) => `${c.slot}:${c.event}:${c.term}:${c.rid}${c.ownSlot ? ":own" : ""}`);
  assert.deepEqual(out, ["0:ELECT:8:50:own", "2:ELECT:9:22", "2:FENCE:7:21"]);
  // One entry per rid even when ELECT and FENCE name the same instance.
  const same = leadersToFence([slot(1, { ELECT: [9, 7], FENCE: [8, 7] })], { slot: 0, term: 10n, rid: 1n });
  assert.equal(same.length, 1);
});

test("election - ELECT outcome: refused, tie, slot taken over, or ok", () => {
  const self = { slot: 1, term: 5n, rid: 42n };
  assert.deepEqual(electOutcome(false, [slot(0, { TERM: [7, 1] })], self), {
    ok: false,
    written: false,
    greatestTerm: 7n,
    reason: "a slot records a term above 5",
  });
  const tie = electOutcome(true, [slot(0, { ELECT: [5, 9] }), slot(1, { BEGIN: [4, 42], ELECT: [5, 42] })], self);
  assert.equal(tie.ok, false);
  assert.match(tie.ok ? "" : tie.reason, /slot 0 also won term 5/);
  const taken = electOutcome(true, [slot(1, { BEGIN: [4, 43], ELECT: [5, 42] })], self);
  assert.match(taken.ok ? "" : taken.reason, /another member started in slot 1/);
  assert.deepEqual(electOutcome(true, [slot(0, { ELECT: [4, 9] }), slot(1, { BEGIN: [4, 42], ELECT: [5, 42] })], self), { ok: true });
});

/**
 * Five machines on a lossy, randomly reordering network: they elect
 * one leader per term, each slot votes once per term, and a candidate only ever stands when its server
 * is DOWN (the machine asserts that itself).
 */
test("election - randomized: one leader and one vote per term among five machines", () => {
  for (let seed = 1; seed <= 30; seed++) {
    const prng = new Prng(seed);
    const slots = [0, 1, 2, 3, 4];
    const machines = slots.map((s) => new Election({ slot: s, slots, heartbeatTimeoutMs: 2000, startTerm: 0n, liveLeaderRecorded: false, random: () => prng.float() }));
    const leaders = new Map<bigint, number>();
    const votes = new Map<string, number>();
    const inbox: { to: number; message: { type: "REQUEST_VOTE" | "VOTE" | "HEARTBEAT" | "RESIGNATION"; term: bigint; from: number } }[] = [];
    const handle = (s: number, effects: ElectionEffect[]): void => {
      for (const e of effects) {
        if (e.type === "broadcast") for (const t of slots) if (t !== s) inbox.push({ to: t, message: e.message });
        if (e.type === "send") {
          inbox.push({ to: e.to, message: e.message });
          const key = `${s}/${e.message.term}`;
          assert.ok(!votes.has(key) || votes.get(key) === e.to, `seed ${seed}: slot ${s} voted twice in term ${e.message.term}`);
          votes.set(key, e.to);
        }
        if (e.type === "status" && e.status.role === "leader") {
          const other = leaders.get(e.status.term);
          assert.ok(other === undefined || other === s, `seed ${seed}: two leaders in term ${e.status.term}`);
          leaders.set(e.status.term, s);
        }
        if (e.type === "persist-elect") handle(s, machines[s]!.electWritten(e.term, { ok: true }, now));
        if (e.type === "start-server") handle(s, machines[s]!.serverStatus("UP", now));
      }
    };
    let now = 0;
    for (const [i, m] of machines.entries()) handle(i, m.begin(now));
    for (let step = 0; step < 3000; step++) {
      now += prng.int(1, 20);
      // Deliver a random subset of the inbox in random order, losing some.
      for (let n = prng.int(0, inbox.length); n > 0 && inbox.length > 0; n--) {
        const [msg] = inbox.splice(prng.int(0, inbox.length - 1), 1);
        if (msg !== undefined && !prng.chance(0.1)) handle(msg.to, machines[msg.to]!.receive(msg.message, now));
      }
      for (const [i, m] of machines.entries()) if (m.deadlineMs !== null && now >= m.deadlineMs) handle(i, m.tick(now));
    }
    assert.ok(leaders.size > 0, `seed ${seed}: nobody ever led`);
  }
});

test("election - a leader heartbeats every HEARTBEAT_INTERVAL_MS", () => {
  const m = new Election({ slot: 0, slots: [0, 1, 2], heartbeatTimeoutMs: 2000, startTerm: 0n, liveLeaderRecorded: false, random: () => 0 });
  m.begin(0);
  m.tick(250);
  m.receive({ type: "VOTE", term: 1n, from: 1 }, 260);
  assert.equal(m.currentRole, "leader");
  assert.equal(m.deadlineMs, 260 + HEARTBEAT_INTERVAL_MS);
  const beats = m.tick(360).filter((e) => e.type === "broadcast" && e.message.type === "HEARTBEAT");
  assert.equal(beats.length, 1);
  assert.equal(m.deadlineMs, 460);
});
