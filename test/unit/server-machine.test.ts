// The server machine (core/server-machine.ts) under inputs that do not fit its state: each is answered with a
// refusal (refuse-greeting) or a refused-input effect and changes nothing; nothing throws. Then a seeded
// random walk over every input kind checks that nothing ever throws and that record writes of one client
// never overlap (KEYLOCK_MACHINE_SEED replays one walk; failures print their seed).
import { test } from "node:test";
import assert from "node:assert/strict";
import { ServerMachine, type GreetingInput, type ServerEffect, type ServerInput } from "../../src/core/server-machine.js";
import { envInteger, prng } from "../support/prng.js";

function machine(records: bigint[] = []): ServerMachine {
  const m = new ServerMachine({ term: 5n, reconnectTimeoutMs: 2000, recoveryTimeoutMs: 3000 });
  m.start(records.map((rid) => ({ rid, address: "h", pid: 0, pidStart: "", resumeKey: `r${rid}`, claimKey: `c${rid}` })));
  return m;
}

let greetings = 0;
function greeting(rid: bigint, fields: Partial<GreetingInput> = {}): GreetingInput {
  return {
    type: "greeting",
    greeting: ++greetings,
    conn: 1,
    rid,
    name: `c${rid}`,
    address: "h",
    farewell: false,
    lastServerTerm: 0n,
    owner: null,
    identity: { kind: "unknown", claimOk: true, fresh: { resumeKey: `r${rid}`, claimKey: `c${rid}` } },
    nowMs: 0,
    ...fields,
  };
}

function refusedInput(effects: ServerEffect[], input: ServerInput["type"]): void {
  assert.equal(effects.length, 1, JSON.stringify(effects, (_k, v: unknown) => (typeof v === "bigint" ? `${v}n` : v)));
  assert.equal(effects[0]!.type, "refused-input");
  assert.equal((effects[0] as { input: string }).input, input);
}

test("server machine - inputs about unknown clients are refused inputs, never errors", () => {
  const m = machine();
  refusedInput(m.input({ type: "farewell", rid: 9n, id: 1 }), "farewell");
  refusedInput(m.input({ type: "disconnected", rid: 9n, conn: 1, reason: "x" }), "disconnected");
  refusedInput(m.input({ type: "locks-recovered", rid: 9n }), "locks-recovered");
  refusedInput(m.input({ type: "client-stuck", rid: 9n }), "client-stuck");
  refusedInput(m.input({ type: "recovery-refuted", rid: 9n, reason: "x" }), "recovery-refuted");
  refusedInput(m.input({ type: "fence-done", rid: 9n }), "fence-done");
  refusedInput(m.input({ type: "fence-failed", rid: 9n, error: "x" }), "fence-failed");
  refusedInput(m.input({ type: "timeout", timer: "reconnect:9" }), "timeout");
  refusedInput(m.input({ type: "timeout", timer: "recovery" }), "timeout");
  assert.equal(m.sessionCount, 0);
  assert.deepEqual(m.fences(), []);
});

test("server machine - record answers nobody asked for are refused inputs", () => {
  const m = machine();
  refusedInput(m.input({ type: "record-persisted", rid: 1n }), "record-persisted");
  refusedInput(m.input({ type: "record-deleted", rid: 1n }), "record-deleted");
  refusedInput(m.input({ type: "record-failed", rid: 1n, error: "x" }), "record-failed");
  // A write in flight answered with the wrong kind: refused, and the real answer still lands.
  const first = m.input(greeting(1n));
  assert.deepEqual(first.map((e) => e.type), ["persist-record"]);
  refusedInput(m.input({ type: "record-deleted", rid: 1n }), "record-deleted");
  assert.deepEqual(m.input({ type: "record-persisted", rid: 1n }).map((e) => e.type), ["accept-greeting"]);
  // Answered twice: the second answer is for a record no longer wanted.
  refusedInput(m.input({ type: "record-persisted", rid: 1n }), "record-persisted");
  assert.equal(m.sessionCount, 1);
});

test("server machine - a persisted record no longer wanted: the greeting is refused, the record deleted", () => {
  const m = machine([1n]);
  m.input(greeting(1n, { lastServerTerm: 4n, identity: { kind: "known", keys: { resumeKey: "r1", claimKey: "c1" }, ok: true } }));
  // The recovery deadline fences the client while its greeting's record write is in flight.
  const fenced = m.input({ type: "timeout", timer: "recovery" }).map((e) => e.type);
  assert.ok(fenced.includes("fence"));
  const landed = m.input({ type: "record-persisted", rid: 1n });
  assert.deepEqual(landed.map((e) => e.type), ["refuse-greeting"]);
  assert.equal((landed[0] as { error: string }).error, "EFENCED");
  // The reclaim's delete is next in this rid's order, after the insert landed.
  const reclaim = m.input({ type: "fence-done", rid: 1n }).map((e) => e.type);
  assert.deepEqual(reclaim, ["log", "delete-record"]);
  assert.deepEqual(m.input({ type: "record-deleted", rid: 1n }).map((e) => e.type), ["forget-locks", "resume-locks"]);
});

test("server machine - duplicate and hostile greetings are refusals", () => {
  const m = machine();
  m.input(greeting(1n));
  m.input({ type: "record-persisted", rid: 1n });
  // The same greeting id and connection again (a duplicate): a first-contact replacement, not an error.
  const again = m.input({ ...greeting(1n), identity: { kind: "known", keys: m.keysOf(1n)!, ok: true } });
  assert.deepEqual(again.map((e) => e.type), ["drop-session", "accept-greeting"]);
  // Keys that are not the ones the machine knows (the driver verified against something else): EAUTH.
  const wrongKeys = m.input(greeting(1n, { identity: { kind: "known", keys: { resumeKey: "x", claimKey: "y" }, ok: true } }));
  assert.deepEqual(wrongKeys.map((e) => [e.type, (e as { error?: string }).error]), [["refuse-greeting", "EAUTH"]]);
  // "Unknown" identity for a rid with keys: EAUTH. A failed proof: EAUTH. A fresh client without keys to issue: EAUTH.
  assert.equal((m.input(greeting(1n))[0] as { error: string }).error, "EAUTH");
  assert.equal((m.input(greeting(1n, { identity: { kind: "known", keys: m.keysOf(1n)!, ok: false } }))[0] as { error: string }).error, "EAUTH");
  assert.equal((m.input(greeting(2n, { identity: { kind: "unknown", claimOk: true, fresh: null } }))[0] as { error: string }).error, "EAUTH");
  // A first greeting whose own claim verifies, for a rid another claim holds (a stranger took it, F2):
  // ERIDTAKEN, so a client that never greeted draws another rid. Not for a later greeting, nor a bad claim.
  const taken = (lastServerTerm: bigint, claimOk: boolean): string =>
    (m.input(greeting(1n, { lastServerTerm, identity: { kind: "known", keys: m.keysOf(1n)!, ok: false, claimOk } }))[0] as { error: string }).error;
  assert.equal(taken(0n, true), "ERIDTAKEN");
  assert.equal(taken(0n, false), "EAUTH");
  assert.equal(taken(4n, true), "EAUTH");
  // A farewell from a client whose session is gone (fenced): refused input.
  m.input({ type: "client-stuck", rid: 1n });
  refusedInput(m.input({ type: "farewell", rid: 1n, id: 3 }), "farewell");
  assert.equal(m.sessionCount, 0);
});

test("server machine - a client whose recovery report was refuted is fenced (client_recovery) and reclaimed, finished reporting or not", () => {
  const m = machine([1n, 2n]);
  const keys = (rid: bigint) => ({ kind: "known" as const, keys: m.keysOf(rid)!, ok: true });
  for (const rid of [1n, 2n]) {
    assert.deepEqual(m.input(greeting(rid, { conn: Number(rid), lastServerTerm: 4n, identity: keys(rid) })).map((e) => e.type), ["persist-record"]);
    assert.deepEqual(m.input({ type: "record-persisted", rid }).map((e) => e.type), ["accept-greeting"]);
  }
  // Client 1 finished reporting; then client 2's report refuted one of its locks.
  assert.deepEqual(m.input({ type: "locks-recovered", rid: 1n }), []);
  const effects = m.input({ type: "recovery-refuted", rid: 1n, reason: "recovery report of key k1 in mode write refuted" });
  assert.deepEqual(
    effects.map((e) => (e.type === "log" ? `log ${e.level} ${e.line}` : e.type === "fence" ? `fence ${e.rid} ${e.reason}` : e.type)),
    ["log warn client 0000000000000001: recovery report of key k1 in mode write refuted; fencing it", "drop-session", "fence 1 client_recovery"],
  );
  // Its fence lands: the record goes, then its locks; client 2 still owes its report, so recovery holds.
  assert.deepEqual(m.input({ type: "fence-done", rid: 1n }).map((e) => e.type), ["log", "delete-record"]);
  assert.deepEqual(m.input({ type: "record-deleted", rid: 1n }).map((e) => e.type), ["forget-locks"]);
  assert.deepEqual(m.input({ type: "locks-recovered", rid: 2n }).map((e) => e.type), ["clear-timer", "resume-locks"]);
  // Refuted again while its fence runs or after: one fence per rid.
  refusedInput(m.input({ type: "recovery-refuted", rid: 1n, reason: "again" }), "recovery-refuted");
});

test("server machine - start twice, or inputs before start, are refused", () => {
  const m = new ServerMachine({ term: 1n, reconnectTimeoutMs: 1, recoveryTimeoutMs: 1 });
  refusedInput(m.input({ type: "farewell", rid: 1n, id: 1 }), "farewell");
  m.start([]);
  assert.equal(m.start([]).length, 1);
});

/** A random walk: greetings, answers, deadlines and agent outcomes in any order, for a few rids. */
function walk(seed: number, steps: number): void {
  const random = prng(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const rids = [1n, 2n, 3n];
  const m = new ServerMachine({ term: 5n, reconnectTimeoutMs: 10, recoveryTimeoutMs: 20 });
  m.start([1n, 2n].map((rid) => ({ rid, address: "h", pid: 7, pidStart: "s", resumeKey: `r${rid}`, claimKey: `c${rid}` })));
  const inFlight = new Map<bigint, string>();
  let conn = 0;
  for (let step = 0; step < steps; step++) {
    const rid = pick(rids);
    const keys = m.keysOf(rid);
    const choices: ServerInput[] = [
      greeting(rid, {
        conn: ++conn,
        lastServerTerm: pick([0n, 4n, 5n, 6n]),
        farewell: random() < 0.2,
        identity: keys !== null ? { kind: "known", keys, ok: random() < 0.9 } : { kind: "unknown", claimOk: random() < 0.9, fresh: { resumeKey: `f${step}`, claimKey: `c${rid}` } },
      }),
      { type: "disconnected", rid, conn: m.session(rid)?.conn ?? conn, reason: "x" },
      { type: "farewell", rid, id: step },
      { type: "locks-recovered", rid },
      { type: "client-stuck", rid },
      { type: "recovery-refuted", rid, reason: "x" },
      { type: "timeout", timer: pick(["recovery", `reconnect:${rid}`] as const) },
      { type: "fence-done", rid },
      { type: "fence-failed", rid, error: "x" },
      { type: "record-persisted", rid },
      { type: "record-deleted", rid },
      { type: "record-failed", rid, error: "x" },
    ];
    const input = random() < 0.005 ? ({ type: "stop" } as const) : pick(choices);
    let effects: ServerEffect[];
    try {
      effects = m.input(input);
    } catch (error) {
      assert.fail(`seed ${seed} step ${step}: ${input.type} threw ${(error as Error).message} (replay: KEYLOCK_MACHINE_SEED=${seed})`);
    }
    if (input.type === "record-persisted" || input.type === "record-deleted" || input.type === "record-failed") {
      if (!effects.some((e) => e.type === "refused-input")) inFlight.delete(input.rid);
    }
    if (input.type === "stop") inFlight.clear();
    for (const effect of effects) {
      if (effect.type === "fatal") inFlight.clear();
      if (effect.type !== "persist-record" && effect.type !== "delete-record") continue;
      assert.ok(!inFlight.has(effect.rid), `seed ${seed} step ${step}: two record writes of rid ${effect.rid} in flight (replay: KEYLOCK_MACHINE_SEED=${seed})`);
      inFlight.set(effect.rid, effect.type);
    }
  }
}

test("server machine - random inputs never throw and never overlap record writes", () => {
  const only = process.env.KEYLOCK_MACHINE_SEED;
  const seeds = only !== undefined ? [Number(only)] : Array.from({ length: envInteger("KEYLOCK_MACHINE_SEEDS", 200) }, (_, i) => i + 1);
  for (const seed of seeds) walk(seed, 400);
  console.log(`server machine: ${seeds.length} random walks of 400 inputs, none threw`);
});
