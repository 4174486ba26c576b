/**
 * The old simulator's protocol trace hook (attachProtocolTrace), kept only for sim/cluster.ts until it runs
 * on the production drivers (H3). The events are sim/trace.ts's.
 */
import type { Key } from "../../src/core/keys.js";
import type { LockRequest, RecoveredLock } from "../../src/core/lock-messages.js";
import type { LockMode } from "../../src/core/modes.js";
import type { DownMessage, UpMessage, Waiter } from "./base.js";
import type { Checkers } from "./checkers.js";
import type { TraceEvent } from "../trace.js";

export type { TraceEvent };

function down(c: number, message: DownMessage): TraceEvent | undefined {
  switch (message.kind) {
    case "grant": {
      const g = message.grant;
      return { e: "down", c, kind: "grant", key: g.key, old: g.oldMode, mode: g.newMode, seq: `${g.writeSeq}` };
    }
    case "refuse":
      return { e: "down", c, kind: "refuse", key: message.key, old: "null", mode: "null", seq: "0" };
    case "invalidate": {
      const i = message.invalidation;
      return { e: "down", c, kind: "invalidate", key: i.key, old: i.oldMode, mode: i.newMode, seq: "0" };
    }
    default:
      return undefined;
  }
}

/**
 * Wraps the hooks of `checkers` so that every protocol event also goes to `sink` (before the checker
 * sees it). Returns the checkers for chaining.
 */
export function attachProtocolTrace(checkers: Checkers, sink: (event: TraceEvent) => void): Checkers {
  const hooks = checkers as unknown as Record<string, (...args: never[]) => unknown>;
  const wrap = <A extends unknown[]>(name: string, toEvent: (...args: A) => TraceEvent | undefined): void => {
    const original = hooks[name] as unknown as (...args: A) => unknown;
    if (typeof original !== "function") throw new Error(`sim/trace: Checkers has no hook ${name}`);
    (hooks as unknown as Record<string, (...args: A) => unknown>)[name] = (...args: A) => {
      const event = toEvent(...args);
      if (event !== undefined) sink(event);
      return original.apply(checkers, args);
    };
  };
  wrap("serverStarted", (term: bigint) => ({ e: "server-start", term: `${term}` }));
  wrap("serverStopped", () => ({ e: "server-stop" }));
  wrap("recoveryBegan", (held: boolean) => ({ e: "recovery-began", held }));
  wrap("recoveryFinished", () => ({ e: "recovery-finished" }));
  wrap("upDelivered", (c: number, message: UpMessage) => {
    if (message.kind === "request") {
      const r = message.request;
      return { e: "up", c, kind: "request", key: r.key, mode: r.newMode, old: r.oldMode, noQueue: r.noQueue };
    }
    if (message.kind === "invalidate-response") {
      const r = message.response;
      return { e: "up", c, kind: "inv-response", key: r.key, mode: r.newMode, old: r.oldMode, noQueue: false };
    }
    return undefined;
  });
  wrap("recoveredLocks", (c: number, locks: readonly RecoveredLock[]) => ({
    e: "recover",
    c,
    locks: locks.map((l) => ({ key: l.key, mode: l.mode, seq: `${l.writeSeq}` })),
  }));
  wrap("clientGone", (c: number, why: string) => ({ e: "gone", c, why }));
  wrap("downSent", (c: number, message: DownMessage) => down(c, message));
  wrap("requestSent", (c: number, _id: number, r: LockRequest) => ({
    e: "req-sent",
    c,
    key: r.key,
    mode: r.newMode,
    noQueue: r.noQueue,
  }));
  wrap("downDelivered", (c: number, message: DownMessage) => {
    if (message.kind === "grant") {
      const g = message.grant;
      return { e: "delivered", c, kind: "grant", key: g.key, mode: g.newMode, seq: `${g.writeSeq}` };
    }
    if (message.kind === "refuse") return { e: "delivered", c, kind: "refuse", key: message.key, mode: "null", seq: "0" };
    return undefined;
  });
  wrap("invalidateResponseSent", (c: number, r: { key: Key; oldMode: LockMode; newMode: LockMode }) => ({
    e: "inv-answered",
    c,
    key: r.key,
    old: r.oldMode,
    mode: r.newMode,
  }));
  wrap("granted", (w: Waiter, mode: LockMode) => ({ e: "handle", c: w.client, id: w.id, key: w.key, mode }));
  wrap("released", (w: Waiter) => ({ e: "release", c: w.client, id: w.id, key: w.key, mode: w.mode }));
  wrap("clientDied", (c: number) => ({ e: "client-out", c, why: "died" }));
  wrap("clientFenced", (c: number) => ({ e: "client-out", c, why: "fenced" }));
  wrap("clientLeft", (c: number) => ({ e: "client-out", c, why: "left" }));
  wrap("clientCutOff", (c: number) => ({ e: "client-out", c, why: "cut-off" }));
  return checkers;
}
