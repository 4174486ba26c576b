// Term bounds of the election (src/core/election.ts, DESIGN §9, issue 8 item 3): out-of-range terms
// are dropped and counted without touching state, a flood logs only O(log n) lines, no term ever
// passes TERM_MAX, and records already holding such a term are named for the operator.
// The randomized test prints its seed; KEYLOCK_SEED=N replays seed N.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  Election,
  QUORUM_MESSAGE_TYPES,
  outOfRangeTerms,
  type ElectionEffect,
  type RecordedSlot,
} from "../../src/core/election.js";
import { TERM_JUMP_MAX, TERM_MAX } from "../../src/core/limits.js";
import { prng } from "../support/prng.js";

const U64_MAX = (1n << 64n) - 1n;

function machine(startTerm = 0n, random: () => number = () => 0): Election {
  return new Election({ slot: 0, slots: [0, 1, 2], heartbeatTimeoutMs: 2000, startTerm, liveLeaderRecorded: false, random });
}

test("election terms - the issue's forged heartbeat (term 2^64-1) is dropped: nothing persisted, term unchanged", () => {
  const m = machine(5n);
  m.begin(0);
  const effects = m.receive({ type: "HEARTBEAT", term: U64_MAX, from: 1 }, 10);
  assert.deepEqual(effects.map((e) => e.type), ["log"]);
  assert.equal(m.currentTerm, 5n);
  assert.equal(m.leader, null);
  assert.deepEqual(m.status().dropped, { "term-range": 1, "term-jump": 0 });
  // and nothing recorded as heard from slot 1
  assert.equal(m.status().peers.find((p) => p.slot === 1)?.lastReceived, null);
});

test("election terms - a flood of out-of-range messages is counted, logged on the 1st, 2nd, 4th... only", () => {
  const m = machine();
  m.begin(0);
  let logs = 0;
  const n = 100_000;
  for (let i = 0; i < n; i++) {
    const term = i % 2 === 0 ? TERM_MAX + 1n + BigInt(i) : TERM_JUMP_MAX + 1n + BigInt(i);
    for (const e of m.receive({ type: QUORUM_MESSAGE_TYPES[i % 4]!, term, from: 1 + (i % 2) }, i)) {
      assert.equal(e.type, "log");
      logs++;
    }
  }
  assert.deepEqual(m.status().dropped, { "term-range": n / 2, "term-jump": n / 2 });
  assert.equal(logs, 2 * (Math.floor(Math.log2(n / 2)) + 1));
  assert.equal(m.currentTerm, 0n);
});

test("election terms - randomized hostile terms: no throw, every adoption at most TERM_JUMP_MAX up, never above TERM_MAX", () => {
  const replay = process.env.KEYLOCK_SEED;
  const base = replay !== undefined ? Number(replay) : Math.floor(Math.random() * 2 ** 31);
  const runs = replay !== undefined ? 1 : 50;
  console.log(`election terms randomized: seeds ${base}..${base + runs - 1} (KEYLOCK_SEED=N replays seed N)`);
  for (let seed = base; seed < base + runs; seed++) {
    const r = prng(seed);
    const big = (): bigint => (BigInt(Math.floor(r() * 2 ** 32)) << 32n) | BigInt(Math.floor(r() * 2 ** 32));
    const startTerm = r() < 0.5 ? BigInt(Math.floor(r() * 100)) : TERM_MAX - BigInt(Math.floor(r() * 3 * Number(TERM_JUMP_MAX)));
    const m = machine(startTerm, r);
    let now = 0;
    m.begin(now);
    try {
      for (let step = 0; step < 2000; step++) {
        now += Math.floor(r() * 300);
        const before = m.currentTerm;
        let effects: ElectionEffect[];
        const pick = r();
        if (pick < 0.3) effects = m.tick(now);
        else {
          // Terms: anything in u64, just around the jump bound, just around TERM_MAX, or old ones.
          const kind = r();
          const term =
            kind < 0.25
              ? big()
              : kind < 0.5
                ? before + TERM_JUMP_MAX - 2n + BigInt(Math.floor(r() * 4))
                : kind < 0.75
                  ? TERM_MAX - 2n + BigInt(Math.floor(r() * 4))
                  : before - BigInt(Math.floor(r() * 3));
          const type = QUORUM_MESSAGE_TYPES[Math.floor(r() * 4)]!;
          effects = m.receive({ type, term: term < 0n ? 0n : term, from: 1 + Math.floor(r() * 2) }, now);
        }
        const after = m.currentTerm;
        assert.ok(after <= TERM_MAX, `term ${after} above TERM_MAX`);
        assert.ok(after - before <= TERM_JUMP_MAX, `term jumped from ${before} to ${after}`);
        for (const e of effects) {
          if (e.type === "persist" || e.type === "persist-elect") assert.ok(e.term <= TERM_MAX, `persists term ${e.term}`);
          if (e.type === "send" || e.type === "broadcast") assert.ok(e.message.term <= TERM_MAX, `sends term ${e.message.term}`);
          // An ELECT write answers at once, so the machine keeps electing (and meets TERM_MAX).
          if (e.type === "persist-elect") m.electWritten(e.term, { ok: false, written: true, greatestTerm: e.term, reason: "test" }, now);
        }
      }
    } catch (error) {
      throw new Error(`seed ${seed}: ${(error as Error).message} (KEYLOCK_SEED=${seed} replays this run)`, { cause: error });
    }
  }
});

test("election terms - records above TERM_MAX (left by the old bug) are named for the operator", () => {
  const ev = (term: bigint) => ({ term, rid: 1n });
  const sane: RecordedSlot[] = [{ slot: 0, events: { BEGIN: ev(3n), TERM: ev(TERM_MAX) } }];
  assert.deepEqual(outOfRangeTerms(sane), []);
  const bricked: RecordedSlot[] = [
    { slot: 0, events: { BEGIN: ev(3n), TERM: ev(U64_MAX) } },
    { slot: 2, events: { ELECT: ev(4n), END: ev(TERM_MAX + 1n) } },
  ];
  assert.deepEqual(outOfRangeTerms(bricked), [`slot 0 TERM term ${U64_MAX}`, `slot 2 END term ${TERM_MAX + 1n}`]);
  assert.throws(() => machine(TERM_MAX + 1n), /above TERM_MAX/);
  assert.doesNotThrow(() => machine(TERM_MAX));
});
