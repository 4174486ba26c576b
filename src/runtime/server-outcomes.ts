/**
 * The server machine's (core/server-machine.ts) effects that take time, for the lock server driver
 * (runtime/server.ts): record writes in the store, the fence agent, and timers. Each is started here and
 * its outcome handed back to the machine as an input, never as an async chain the machine waits in:
 * `persist-record` → `record-persisted` / `record-failed`, `delete-record` → `record-deleted` /
 * `record-failed`, `fence` → `fence-done` / `fence-failed`, `set-timer` → `timeout`.
 *
 * Guarantees:
 * - Persist before you promise: a mounted-client record is written as the machine gave it (B21: an
 *   existing record is success), and the machine hears of it only once the store answered.
 * - One timer per TimerId: setting one clears the previous; `clear-timer` and `stop` cancel. A timer
 *   expires only after the input already due was read (clock.defer: after the poll phase, as the
 *   election's timers, B41), and not if that input cleared or set it again: a member stalled past a
 *   client's reconnect deadline (a GC pause, a descheduled process) reads the greeting that came in
 *   meanwhile before deciding the client is gone.
 * - After the server stops, no outcome reaches the machine and no fence starts (B36, B38: no recovery
 *   or fence state outlives a server).
 * - A client is fenced as the owner the machine recorded (the process found behind its connection), with
 *   the agent's timeout (`fenceTimeoutMs`, default FENCE_TIMEOUT_MS); each fence and reclaim is counted
 *   and each fence's outcome observed in metrics.
 * Relies on: the machine deciding whom to fence and when (it dropped the session and deduped the rid,
 * B37), and `isStopping` turning true once, before `stop`.
 */
import { ridToHex } from "../core/keys.js";
import type { ServerEffect, ServerInput, TimerId } from "../core/server-machine.js";
import { setDeadline, type Clock, type Timer } from "../io/world.js";
import { FENCE_TIMEOUT_MS, type FenceAgent } from "../io/fence.js";
import type { Logger } from "../io/log.js";
import type { MountedClientRecord, Store } from "../store/store.js";
import type { Metrics, ServerCounts } from "./metrics.js";

type Effect<T extends ServerEffect["type"]> = Extract<ServerEffect, { type: T }>;

export interface OutcomeHost {
  readonly store: Store;
  readonly clock: Clock;
  readonly fenceAgent: FenceAgent;
  readonly fenceTimeoutMs: number | undefined;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly counters: ServerCounts;
  isStopping(): boolean;
  /** Hands an outcome to the server machine and carries out its effects. */
  input(input: ServerInput): void;
}

/** Record writes, fences and timers of one server, each answered back to its machine. */
export class MachineOutcomes {
  private readonly timers = new Map<TimerId, Timer>();

  constructor(private readonly host: OutcomeHost) {}

  persistRecord(effect: Effect<"persist-record">): void {
    const rid = effect.rid;
    const record: MountedClientRecord = {
      rid,
      name: effect.name,
      address: effect.address,
      pid: effect.owner?.pid ?? 0,
      pidStart: effect.owner?.start ?? "",
      hostname: effect.name,
      greetedAtMs: effect.greetedAtMs,
      ...effect.keys,
    };
    // Persist before promising (B21: an existing record is success).
    this.host.store.insertClient(record).then(
      () => this.answer({ type: "record-persisted", rid }),
      (error: Error) => this.answer({ type: "record-failed", rid, error: error.message }),
    );
  }

  deleteRecord(effect: Effect<"delete-record">): void {
    const rid = effect.rid;
    if (effect.purpose === "reclaim") this.host.counters.reclaims++;
    this.host.store.deleteClient(rid).then(
      () => this.answer({ type: "record-deleted", rid }),
      (error: Error) => this.answer({ type: "record-failed", rid, error: error.message }),
    );
  }

  setTimer(effect: Effect<"set-timer">): void {
    const timer = effect.timer;
    const previous = this.timers.get(timer);
    if (previous !== undefined) this.host.clock.clearTimeout(previous);
    const expire = (): void => {
      // Cleared or set again while the input already due was read (a greeting that came in during a stall).
      if (this.timers.get(timer) !== handle) return;
      this.timers.delete(timer);
      this.answer({ type: "timeout", timer });
    };
    const handle = setDeadline(this.host.clock, expire, effect.ms);
    this.timers.set(timer, handle);
  }

  clearTimer(effect: Effect<"clear-timer">): void {
    const timer = this.timers.get(effect.timer);
    if (timer !== undefined) this.host.clock.clearTimeout(timer);
    this.timers.delete(effect.timer);
  }

  /** Runs the fence agent for a fence the machine started (it dropped the session and deduped the rid, B37). */
  fence(effect: Effect<"fence">): void {
    const { rid, address, owner, reason } = effect;
    const host = this.host;
    if (host.isStopping()) return;
    const found = owner === null ? {} : { pid: owner.pid, pidStart: owner.start };
    host.log(`fencing client ${ridToHex(rid)} at ${address} (${reason}) with the ${host.fenceAgent.name} agent`, { level: "warn", rid: ridToHex(rid) });
    host.counters.fences++;
    host.fenceAgent.fence({ rid, address, reason, ...found }, host.fenceTimeoutMs ?? FENCE_TIMEOUT_MS).then(
      () => {
        host.metrics.fenceFinished(reason, "fenced");
        this.answer({ type: "fence-done", rid });
      },
      (error: Error) => {
        host.metrics.fenceFinished(reason, "failed");
        this.answer({ type: "fence-failed", rid, error: error.message });
      },
    );
  }

  /** The server stops: every timer is cancelled (outcomes still in flight are dropped on arrival). */
  stop(): void {
    for (const timer of this.timers.values()) this.host.clock.clearTimeout(timer);
    this.timers.clear();
  }

  /** An outcome goes to the machine, unless the server stopped meanwhile. */
  private answer(input: ServerInput): void {
    if (!this.host.isStopping()) this.host.input(input);
  }
}
