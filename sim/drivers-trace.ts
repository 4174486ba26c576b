/**
 * The protocol trace (sim/trace.ts events, same meanings) of a run of the driver simulator (drivers.ts),
 * taken from the production code: the real core LockServer inside each LockServerRuntime and the real
 * core ClientLocks inside each LockClient are wrapped, instance by instance, so that every call the
 * driver makes (the inputs) and every effect the pure core returns (the decisions) also goes to a sink.
 * model/trace-check.ts replays that stream against the model's transition rules.
 *
 * Where each event comes from:
 *   up / recover / gone      LockServer.onRequest, onInvalidateResponse, onRecoverBatch, onClientGone (before the call)
 *   down                     every grant / invalidate / refuse effect a LockServer call returned (decided, sent or not:
 *                            an effect for a departed client is decided by the table all the same)
 *   recovery-finished        LockServer.resumeAfterRecovery (before the call)
 *   server-start, recovery-began   when the simulator has the started runtime (`locks.recovering` says
 *                            whether LockServerRuntime.start held the table for recovery); server-stop at its crash
 *   req-sent / inv-started / inv-answered / handle   send-request / invalidate / send-invalidate-response /
 *                            granted effects of ClientLocks calls
 *   delivered                ClientLocks.onGrant / onRefuse (before the call)
 *   release                  ClientLocks.release of a waiter that had a handle
 *   client-out               the client's process died (crash or fence), it was fenced (its handles void), or closed
 * Guarantees: the wrappers only observe (arguments and results pass through untouched), so a traced run is
 * the same run (same trace hash). A LockServer whose server crashed says nothing more: its table is void.
 * Relies on: the runtime handing its table to the `parts.lockServer` hook of LockServerRuntime.start (its
 * one seam, runtime/server.ts ServerParts) and the client's machine from connectInWorld's seam
 * (client.ts ClientParts) before the client's first call into it; all effects are returned by the pure cores.
 */
import type { ClientLockEffect, ClientLocks } from "../src/core/client-locks.js";
import type { Key } from "../src/core/keys.js";
import type { LockServer, LockServerEffect } from "../src/core/lock-server.js";
import type { LockGrant, LockInvalidation, LockRequest, RecoveredLock, Rid } from "../src/core/lock-messages.js";
import type { LockMode } from "../src/core/modes.js";
import type { TraceEvent } from "./trace.js";

export type TraceSink = (event: TraceEvent) => void;

type Method = (...args: never[]) => unknown;

/** Replaces `object[name]` by a wrapper that sees the arguments before and the result after the real call. */
export function around<A extends unknown[], R>(
  object: object,
  name: string,
  before: (...args: A) => void,
  after: (result: R, ...args: A) => void,
): void {
  const methods = object as Record<string, Method>;
  const original = methods[name] as unknown as ((...args: A) => R) | undefined;
  if (typeof original !== "function") throw new Error(`sim/drivers-trace: no method ${name} to observe`);
  (methods as unknown as Record<string, (...args: A) => R>)[name] = (...args: A): R => {
    before(...args);
    const result = original.apply(object, args);
    after(result, ...args);
    return result;
  };
}

function downOf(c: number, effect: LockServerEffect): TraceEvent | undefined {
  switch (effect.type) {
    case "grant": {
      const g = effect.grant;
      return { e: "down", c, kind: "grant", key: g.key, old: g.oldMode, mode: g.newMode, seq: `${g.writeSeq}` };
    }
    case "invalidate": {
      const i = effect.invalidation;
      return { e: "down", c, kind: "invalidate", key: i.key, old: i.oldMode, mode: i.newMode, seq: "0" };
    }
    case "refuse":
      return { e: "down", c, kind: "refuse", key: effect.key, old: "null", mode: "null", seq: "0" };
    default:
      return undefined; // a protocol error closes the peer's connection: no protocol step
  }
}

/**
 * Observes one server's lock table from now on. `clientOf` names a rid's client; `live()` is false once
 * that server crashed. Emits server-start and recovery-began at once.
 */
export function traceLockServer(locks: LockServer, term: bigint, clientOf: (rid: Rid) => number, live: () => boolean, sink: TraceSink): void {
  const emit = (event: TraceEvent): void => {
    if (live()) sink(event);
  };
  const effects = (result: LockServerEffect[]): void => {
    for (const effect of result) {
      const event = downOf(clientOf(effect.rid), effect);
      if (event !== undefined) emit(event);
    }
  };
  emit({ e: "server-start", term: `${term}` });
  emit({ e: "recovery-began", held: locks.recovering });
  around(locks, "onRequest", (rid: Rid, _id: number, r: LockRequest) =>
    emit({ e: "up", c: clientOf(rid), kind: "request", key: r.key, mode: r.newMode, old: r.oldMode, noQueue: r.noQueue }), effects);
  around(locks, "onInvalidateResponse", (rid: Rid, r: LockInvalidation) =>
    emit({ e: "up", c: clientOf(rid), kind: "inv-response", key: r.key, mode: r.newMode, old: r.oldMode, noQueue: false }), effects);
  around(locks, "onRecoverBatch", (rid: Rid, batch: readonly RecoveredLock[]) =>
    emit({ e: "recover", c: clientOf(rid), locks: batch.map((l) => ({ key: l.key, mode: l.mode, seq: `${l.writeSeq}` })) }), effects);
  around(locks, "onClientGone", (rid: Rid) => emit({ e: "gone", c: clientOf(rid), why: "farewell or reclaim" }), effects);
  around(locks, "onWriteSeqsAvailable", () => undefined, effects);
  around(locks, "resumeAfterRecovery", () => emit({ e: "recovery-finished" }), effects);
}

/**
 * Observes client `c`'s lock manager from now on. `out(why)` reports that the client stopped counting
 * (its process died); a reset (fenced, or closed after its farewell) reports it too. Nothing after that.
 */
export function traceClientLocks(machine: ClientLocks, c: number, sink: TraceSink): { out(why: "died" | "fenced" | "left"): void } {
  let isOut = false;
  const emit = (event: TraceEvent): void => {
    if (!isOut) sink(event);
  };
  const out = (why: "died" | "fenced" | "left"): void => {
    emit({ e: "client-out", c, why });
    isOut = true;
  };
  const handles = new Map<number, { key: Key; mode: LockMode }>();
  const effects = (result: ClientLockEffect[]): void => {
    for (const effect of result) {
      if (effect.type === "send-request") {
        const r = effect.request;
        emit({ e: "req-sent", c, key: r.key, mode: r.newMode, noQueue: r.noQueue });
      } else if (effect.type === "send-invalidate-response") {
        const r = effect.response;
        emit({ e: "inv-answered", c, key: r.key, old: r.oldMode, mode: r.newMode });
      } else if (effect.type === "invalidate") {
        emit({ e: "inv-started", c, key: effect.key, from: effect.from, to: effect.to });
      } else if (effect.type === "granted") {
        handles.set(effect.waiterId, { key: effect.key, mode: effect.mode });
        emit({ e: "handle", c, id: effect.waiterId, key: effect.key, mode: effect.mode });
      }
    }
  };
  const none = (): void => undefined;
  around(machine, "acquire", none, effects);
  around(machine, "release", (waiterId: number) => {
    const handle = handles.get(waiterId);
    if (handle === undefined) return;
    handles.delete(waiterId);
    emit({ e: "release", c, id: waiterId, key: handle.key, mode: handle.mode });
  }, effects);
  around(machine, "abort", none, effects);
  around(machine, "onGrant", (g: LockGrant) => emit({ e: "delivered", c, kind: "grant", key: g.key, mode: g.newMode, seq: `${g.writeSeq}` }), effects);
  around(machine, "onRefuse", (key: Key) => emit({ e: "delivered", c, kind: "refuse", key, mode: "null", seq: "0" }), effects);
  around(machine, "onInvalidate", none, effects);
  around(machine, "invalidationDone", none, effects);
  around(machine, "onNewServer", none, effects);
  around(machine, "shutdown", none, effects);
  around(machine, "reset", (code: string) => out(code === "EFENCED" ? "fenced" : "left"), effects);
  return { out };
}
