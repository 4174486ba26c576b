/**
 * The protocol trace of a simulator run (`npm run sim -- --seed S --trace FILE`): one JSON object per
 * line for every event at the protocol boundary between clients and the server, in the order they
 * happen, for model/trace-check.ts to replay against the model's transition rules.
 *
 * Events (`e`):
 *   server-start {term}                     a server incarnation starts (a crash or stop came before)
 *   server-stop                             it crashed or stopped: its table and messages are void
 *   recovery-began {held}                   its lock table holds for recovery (held) or serves at once
 *   recovery-finished                       the hold ends
 *   up {c, kind: request|inv-response, key, mode, old, noQueue}   a lock message reached the lock table
 *   recover {c, locks: [{key, mode, seq}]}  a recovery batch reached it
 *   gone {c, why}                           farewell or reclaim removed client c from it
 *   down {c, kind: grant|refuse|invalidate, key, old, mode, seq}  the lock table decided a message
 *   req-sent {c, key, mode, noQueue}        client c's lock manager sent a request
 *   delivered {c, kind: grant|refuse, key, mode, seq}  client c applied a server answer
 *   inv-started {c, key, from, to}          client c's application callback for an invalidation began (the
 *                                           cached mode is lowered from `from` to `to` now, not at the answer)
 *   inv-answered {c, key, old, mode}        client c answered an invalidation
 *   handle {c, id, key, mode}               client c's application got a handle
 *   release {c, id, key, mode}              ... released it
 *   client-out {c, why: died|fenced|left|cut-off}  client c stopped counting (its handles are void)
 *
 * Emitted by drivers-trace.ts, which observes the real cores inside the production drivers (LockServer in
 * each LockServerRuntime, ClientLocks in each LockClient); read by model/trace-check.ts. This module is
 * only the event type: it guarantees nothing and relies on nothing.
 */
import type { Key } from "../src/core/keys.js";
import type { LockMode } from "../src/core/modes.js";

export type TraceEvent =
  | { e: "server-start"; term: string }
  | { e: "server-stop" }
  | { e: "recovery-began"; held: boolean }
  | { e: "recovery-finished" }
  | { e: "up"; c: number; kind: "request" | "inv-response"; key: Key; mode: LockMode; old: LockMode; noQueue: boolean }
  | { e: "recover"; c: number; locks: { key: Key; mode: LockMode; seq: string }[] }
  | { e: "gone"; c: number; why: string }
  | { e: "down"; c: number; kind: "grant" | "refuse" | "invalidate"; key: Key; old: LockMode; mode: LockMode; seq: string }
  | { e: "req-sent"; c: number; key: Key; mode: LockMode; noQueue: boolean }
  | { e: "delivered"; c: number; kind: "grant" | "refuse"; key: Key; mode: LockMode; seq: string }
  | { e: "inv-started"; c: number; key: Key; from: LockMode; to: LockMode }
  | { e: "inv-answered"; c: number; key: Key; old: LockMode; mode: LockMode }
  | { e: "handle"; c: number; id: number; key: Key; mode: LockMode }
  | { e: "release"; c: number; id: number; key: Key; mode: LockMode }
  | { e: "client-out"; c: number; why: "died" | "fenced" | "left" | "cut-off" };
