// Hostile simulated peers (sim/hostile-peer.ts, issue 10): the hostile-peer fuzzer's attacks
// (sim/hostile-attacks.ts) run inside the driver simulator against the real LockServerRuntime, at the
// byte level, while real LockClients run their workload under the seed's faults. Over a few hundred seeds
// no checker fires: nothing throws (no InvariantError), the server never resigns over a peer, honest
// clients never see EPROTO or EAUTH, exclusion and fencing hold, every honest client finishes (no key
// wedged), idle sockets are closed at the greeting deadline. A seed replays exactly, and a server whose
// frame handling throws an InvariantError on some hostile input is caught. Known finding F1 (a hostile
// client's lying recovery report got an honest client's truthful one refused) is closed by grant proofs:
// the peers' lying reports are refuted (counted and printed here), and seed 829, its first replay, passes.
// Every failing seed is printed with its replay command (npm run sim -- --hostile N --seed S).
// KEYLOCK_SIM_HOSTILE_SEEDS overrides the number of seeds, KEYLOCK_SIM_BASE the first one.
import { test } from "node:test";
import assert from "node:assert/strict";
import { formatDriverViolation, runDriverSeed } from "../../sim/drivers.js";
import { LockServerRuntime } from "../../src/runtime/server.js";
import { InvariantError } from "../../src/core/errors.js";
import { keyToText } from "../../src/core/keys.js";
import type { MessageConnection } from "../../src/io/world.js";
import type { Message } from "../../src/protocol/messages.js";
import { envInteger } from "../support/prng.js";

const SEEDS = envInteger("KEYLOCK_SIM_HOSTILE_SEEDS", 300);
const BASE = envInteger("KEYLOCK_SIM_BASE", 1);
const HOSTILE = 3;

test(`sim hostile peers - seeds ${BASE}..${BASE + SEEDS - 1} with up to ${HOSTILE} hostile peers keep every invariant`, { timeout: 300_000 }, async () => {
  const failures: string[] = [];
  const strategies: Record<string, number> = {};
  let greeted = 0;
  let ridTaken = 0;
  let refuted = 0;
  let bytes = 0;
  let grants = 0;
  for (let seed = BASE; seed < BASE + SEEDS; seed++) {
    const result = await runDriverSeed(seed, { hostile: HOSTILE });
    grants += result.stats.grants;
    greeted += result.hostile?.greeted ?? 0;
    ridTaken += result.hostile?.ridTaken ?? 0;
    refuted += result.hostile?.refuted ?? 0;
    bytes += result.hostile?.bytesSent ?? 0;
    for (const [name, n] of Object.entries(result.hostile?.strategies ?? {})) strategies[name] = (strategies[name] ?? 0) + n;
    if (result.violation !== undefined) failures.push(formatDriverViolation(result.violation, "none", false, HOSTILE));
  }
  for (const line of failures) console.log(line);
  console.log(`sim hostile: ${SEEDS} seeds, ${failures.length} violations, ${grants} honest grants, ${greeted} hostile sessions greeted, ${ridTaken} refused ERIDTAKEN, ${bytes} hostile bytes, ${refuted} lying recovery reports refuted; strategies ${JSON.stringify(strategies)}`);
  assert.equal(failures.length, 0, `violations:\n${failures.join("\n")}`);
  // The attacks reach the server: sessions get past the greeting, and every strategy ran.
  assert.ok(greeted > SEEDS / 2 && grants > SEEDS, "hostile peers greeted and honest clients were granted");
  // A live client's rid taken as a first greeting under the peer's own claim is answered ERIDTAKEN (rare: a
  // few times in 300 seeds, 2 in seeds 1..300; a shorter run may see none).
  if (SEEDS >= 300) assert.ok(ridTaken > 0, "no hostile greeting was answered ERIDTAKEN");
  for (const name of ["returning-holder", "field-mutate", "byte-mutate", "reorder", "rogue-holder", "replay", "truncate", "length", "idle", "flood", "server-frames", "garbage", "greeting-attack", "forged"]) {
    assert.ok((strategies[name] ?? 0) > 0, `strategy ${name} never ran`);
  }
});

// A hostile peer replayed an honest client's recorded farewell session under a rid of its own: a farewell
// greeting for a rid without a record is served again without a proof (a resent farewell must be: nothing is
// left to protect), so the server named the peer by the recorded client name. The honesty checker took that
// for the honest client; it now goes by the rid (and a departed honest client's rid is no longer that
// client's either). Found as seed 10101565 (the peer named "c0"), which no longer reaches it since protocol
// version 3 (larger frames, grant proofs); seed 10105583 does (the peer named "c1").
test("sim hostile peers - a replayed farewell greeting under the peer's own rid is not the client it names (seed 10105583)", async () => {
  const result = await runDriverSeed(10105583, { hostile: HOSTILE, keepTrace: true });
  assert.equal(result.violation, undefined, result.violation === undefined ? "" : formatDriverViolation(result.violation, "none", false, HOSTILE));
  assert.ok(result.trace?.some((line) => /protocol error from client [0-9a-f]{16} \(c1\)/.test(line)), "seed 10105583 no longer has the peer greeted as c1");
});

// Not the hostile peers' doing: c4's invalidation from a server that then crashed was still running when c4
// reported k3 to the next server, so it reported the pre-invalidation mode (read, B7); the callback finished
// (c4 at null) and the new server, which never needed k3 again, still believed read. Harmless by design (an
// invalidation of a lock not held is answered at once, B12; reference §6.12), and the quiet checker took it
// for a divergence. It now allows exactly that: a mode a recovery reported above where the lock ended, until
// a grant or an invalidation on the key.
test("sim hostile peers - a server left believing a pre-invalidation mode recovery reported is not a divergence (seed 10101951)", async () => {
  const result = await runDriverSeed(10101951, { hostile: HOSTILE, keepTrace: true });
  assert.equal(result.violation, undefined, result.violation === undefined ? "" : formatDriverViolation(result.violation, "none", false, HOSTILE));
  assert.ok(result.trace?.some((line) => /c4 flushes k3 read->null/.test(line)), "seed 10101951 no longer has c4's invalidation of k3");
});

// Known finding F2, closed: a hostile peer that saw an honest client's first greeting took its rid on the
// next server (the first had crashed before recording it); the honest client was refused EAUTH and, in the
// simulator, blamed for the stranger's fence. It is now told ERIDTAKEN and greets again under another rid.
test("sim hostile peers - a rid taken before its first greeting completed (F2, seed 8422859) costs the honest client nothing", async () => {
  const result = await runDriverSeed(8422859, { hostile: HOSTILE, keepTrace: true });
  assert.equal(result.violation, undefined, result.violation === undefined ? "" : formatDriverViolation(result.violation, "none", false, HOSTILE));
  assert.ok(result.trace?.some((line) => /c0 greets again as [0-9a-f]{16}: f58678188ce96484 is another client's/.test(line)), "seed 8422859 no longer has c0's rid taken");
});

test("sim hostile peers - a seed replays exactly (same trace, same hash)", async () => {
  for (const seed of [BASE + 2, BASE + 11]) {
    const first = await runDriverSeed(seed, { hostile: HOSTILE, keepTrace: true });
    const second = await runDriverSeed(seed, { hostile: HOSTILE, keepTrace: true });
    console.log(`sim hostile: seed ${seed} -> ${first.traceLines} trace lines, hash ${first.traceHash}`);
    assert.ok((first.hostile?.cases ?? 0) > 0, `seed ${seed} ran no hostile case`);
    assert.deepEqual(second.trace, first.trace, `seed ${seed}: the trace differs between two runs`);
    assert.equal(second.traceHash, first.traceHash);
  }
});

/** Runs seeds with `serve` wrapped by `plant` until a checker fires; restores `serve`. */
async function plantedRun(plant: (connection: MessageConnection, runtime: LockServerRuntime) => void, seeds = 60): Promise<{ line: string; checker: string } | null> {
  const proto = LockServerRuntime.prototype;
  const serve = Object.getOwnPropertyDescriptor(proto, "serve")!.value as (this: LockServerRuntime, connection: MessageConnection) => void;
  proto.serve = function (this: LockServerRuntime, connection: MessageConnection) {
    plant(connection, this);
    serve.call(this, connection);
  };
  try {
    for (let seed = BASE; seed < BASE + seeds; seed++) {
      const result = await runDriverSeed(seed, { hostile: HOSTILE });
      if (result.violation !== undefined) return { line: formatDriverViolation(result.violation, "none", false, HOSTILE), checker: result.violation.checker };
    }
    return null;
  } finally {
    proto.serve = serve;
  }
}

/** Wraps a connection's message handler (what the server's frame handling does with each message). */
function onEachMessage(connection: MessageConnection, before: (message: Message) => void): void {
  const start = connection.start.bind(connection);
  connection.start = (handlers) =>
    start({
      ...handlers,
      onMessage: (message) => {
        before(message);
        handlers.onMessage(message);
      },
    });
}

/** A lock request for a key no honest client uses: only hostile peers send one (a flood's, a mutated key). */
function hostileKey(message: Message): boolean {
  return message.payload.kind === "lock" && !/^k\d$/.test(keyToText(message.payload.body.key));
}

test("sim hostile peers - a server whose frame handling throws an InvariantError on hostile input is caught", async () => {
  // As a missed validation deep in a driver would: the throw reaches the event loop.
  const caught = await plantedRun((connection) =>
    onEachMessage(connection, (message) => {
      if (hostileKey(message)) throw new InvariantError("planted: a lock request for a key the table never saw");
    }),
  );
  console.log(`sim hostile: planted InvariantError -> ${caught?.line ?? "not caught"}`);
  assert.equal(caught?.checker, "crash", "the planted InvariantError was not reported");
  assert.match(caught.line, /InvariantError.*planted/s);
});

test("sim hostile peers - a server that resigns over hostile input is caught", async () => {
  const caught = await plantedRun((connection, runtime) =>
    onEachMessage(connection, (message) => {
      if (hostileKey(message)) (runtime as unknown as { fatal(reason: string): void }).fatal("planted: a peer's request stopped the server");
    }),
  );
  console.log(`sim hostile: planted resignation -> ${caught?.line ?? "not caught"}`);
  assert.equal(caught?.checker, "resigned", caught?.line ?? "not caught");
});

test("sim hostile peers - a server that keeps never-greeting sockets open is caught", async () => {
  // The greeting deadline's close is swallowed, as if the timer were never armed.
  const caught = await plantedRun((connection) => {
    const close = connection.close.bind(connection);
    connection.close = (reason) => {
      if (!/^no greeting within/.test(reason)) close(reason);
    };
  });
  console.log(`sim hostile: planted idle sockets -> ${caught?.line ?? "not caught"}`);
  assert.equal(caught?.checker, "greeting-deadline", caught?.line ?? "not caught");
});

test("sim hostile peers - an InvariantError the server catches and logs (a failed greeting) is caught", async () => {
  const planted = new WeakSet<LockServerRuntime>();
  const caught = await plantedRun((_connection, runtime) => {
    if (planted.has(runtime)) return;
    planted.add(runtime);
    type OnGreeting = (connection: MessageConnection, conn: number, header: unknown, greeting: { name: string }, nonces: unknown, done: unknown) => Promise<unknown>;
    // The greeting executor (runtime/server-greeting.ts ServerGreetings) the runtime keeps as `greetings`.
    const inner = (runtime as unknown as { greetings: { onGreeting: OnGreeting } }).greetings;
    const onGreeting = inner.onGreeting.bind(inner);
    inner.onGreeting = async (connection, conn, header, greeting, nonces, done) => {
      if (greeting.name.startsWith("hostile-")) throw new InvariantError("planted: a hostile greeting reached an assertion");
      return onGreeting(connection, conn, header, greeting, nonces, done);
    };
  });
  console.log(`sim hostile: planted caught InvariantError -> ${caught?.line ?? "not caught"}`);
  assert.equal(caught?.checker, "invariant", caught?.line ?? "not caught");
});

test("sim hostile peers - known finding F1 is closed: a returning holder's lying report is refuted by the honest one (seed 829)", async () => {
  // A returning hostile holder claims write on k1 in its recovery report before c1 reports its own write on
  // k1. Before grant proofs, c1's truthful report was refused as its protocol error (EPROTO) and c1 fenced.
  const result = await runDriverSeed(829, { hostile: HOSTILE, keepTrace: true });
  const line = result.violation === undefined ? "no violation" : formatDriverViolation(result.violation, "none", false, HOSTILE);
  console.log(`sim hostile: F1 seed 829 -> ${line}, ${result.hostile?.refuted ?? 0} refuted`);
  assert.equal(result.violation, undefined, line);
  assert.ok((result.hostile?.refuted ?? 0) > 0, "seed 829 no longer has a lying recovery report refuted");
});
