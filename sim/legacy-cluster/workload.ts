/**
 * LEGACY (sim/legacy-cluster/): part of the old mirror simulator, kept only because sim/cluster.ts still
 * runs on it; the lock simulator is sim/drivers.ts over the production drivers (docs/simulation.md).
 *
 * The random application workload, and the forced-shrink driver.
 *
 * Workload: every client runs several concurrent tasks. A task repeats: think (random virtual time),
 * then one operation: acquire one hot key, or two distinct hot keys in key order (like the reference's
 * sorted multi-inode locking), each in a random mode (read, write, write_only), some nonblock, some
 * aborted after a random delay if still waiting; once everything is held, use it (read from cache
 * under read/write handles, write with the fencing token under write/write_only handles, sometimes
 * again in the middle of the hold), hold for random virtual time, release in reverse order. A failed
 * acquire (EAGAIN, EABORTED) releases what the operation already holds and moves on. A task holds
 * handles only in increasing key order and waits for nothing else, so the workload itself cannot
 * deadlock: every stall is the lock service's.
 *
 * Early leavers: some clients run fewer operations and, once their tasks finished (every handle
 * released), close while the others carry on: shutdown, farewell as the connection's last message, and
 * reset on the farewell response. The server forgets them mid-run (onClientGone), which may unblock
 * requests waiting on their cached grants or unanswered invalidations.
 *
 * Idle-limit shrinking happens naturally: the idle lock limit (1–3) is below the number of keys a
 * client touches, so acquires keep releasing idle locks with null requests.
 *
 * Forced shrink: each client repeatedly acquires and releases a fresh private key (read). Each acquire
 * makes the client release its oldest idle lock (idleLockLimit), so after at most hot keys + limit + a
 * few cycles every hot key went back to the server through the real shrink path (null request,
 * self-invalidation, null grant).
 *
 * Failures: a task of a client that died stops at once (a dead process does nothing); a task of a
 * client that learned EFENCED sees its waiters fail and stops after releasing what it held (a release of
 * a handle the reset orphaned is harmless). A client cut off by a fence keeps running its tasks until it
 * learns EFENCED; its resource accesses fail meanwhile (client-node.ts). `running` counts the tasks of
 * clients that still work.
 *
 * Relies on: world.ts calling `onResolve` inside the effect loop of a machine call, so everything that
 * calls a machine again (next acquire, release, abort) is scheduled as its own event, never done inline.
 */
import { keyFromText, type Key } from "../../src/core/keys.js";
import type { Prng } from "../prng.js";
import type { ClientNode, Waiter, World } from "./world.js";

export type HandleMode = "read" | "write" | "write_only";

export interface WorkloadConfig {
  readonly tasksPerClient: number;
  readonly opsPerTask: number;
  readonly modeWeights: Readonly<Record<HandleMode, number>>;
  readonly nonblockChance: number;
  readonly abortChance: number;
  readonly abortMaxUs: number;
  readonly holdMaxUs: number;
  readonly thinkMaxUs: number;
  /** Probability that an operation takes two keys (in key order) instead of one. */
  readonly pairChance: number;
  /** Probability of a second write in the middle of a write/write_only hold. */
  readonly midWriteChance: number;
  /** Clients (indexes) that close during the active phase, after `leaverOpsPerTask` operations per task. */
  readonly leavers: readonly number[];
  readonly leaverOpsPerTask: number;
}

/** The shared hot keys: k0, k1, ... (they sort in index order for up to 10). */
export function hotKeys(count: number): Key[] {
  return Array.from({ length: count }, (_, i) => keyFromText(`k${i}`));
}

interface Step {
  readonly key: Key;
  readonly mode: HandleMode;
  readonly nonblock: boolean;
}

class Task {
  /** No operation left (or its client stopped working). */
  done = false;
  readonly client: ClientNode;
  readonly #world: World;
  readonly #client: ClientNode;
  readonly #name: string;
  readonly #keys: readonly Key[];
  readonly #config: WorkloadConfig;
  readonly #prng: Prng;
  readonly #onDone: () => void;
  #opsLeft: number;
  #plan: Step[] = [];
  #held: Waiter[] = [];

  constructor(
    world: World,
    client: ClientNode,
    name: string,
    keys: readonly Key[],
    config: WorkloadConfig,
    prng: Prng,
    opsPerTask: number,
    onDone: () => void,
  ) {
    this.#world = world;
    this.client = client;
    this.#client = client;
    this.#name = name;
    this.#keys = keys;
    this.#config = config;
    this.#prng = prng;
    this.#onDone = onDone;
    this.#opsLeft = opsPerTask;
  }

  next(): void {
    if (this.done) return;
    if (this.#opsLeft === 0 || !this.#client.acting) {
      this.done = true;
      this.#onDone();
      return;
    }
    this.#opsLeft--;
    this.#world.clock.schedule(this.#prng.int(0, this.#config.thinkMaxUs), () => this.#operation());
  }

  #operation(): void {
    if (!this.#client.acting) {
      this.next();
      return;
    }
    const p = this.#prng;
    const cfg = this.#config;
    let keys: Key[];
    if (this.#keys.length >= 2 && p.chance(cfg.pairChance)) {
      const a = p.int(0, this.#keys.length - 1);
      let b = p.int(0, this.#keys.length - 2);
      if (b >= a) b++;
      keys = [this.#keys[Math.min(a, b)]!, this.#keys[Math.max(a, b)]!];
    } else {
      keys = [p.pick(this.#keys)];
    }
    this.#plan = keys.map((key) => ({
      key,
      mode: p.weighted(cfg.modeWeights),
      nonblock: p.chance(cfg.nonblockChance),
    }));
    this.#acquire(0);
  }

  #acquire(i: number): void {
    if (!this.#client.alive) return;
    if (!this.#client.acting) {
      this.#finish();
      return;
    }
    const step = this.#plan[i]!;
    const abortAfterUs = this.#prng.chance(this.#config.abortChance)
      ? this.#prng.int(0, this.#config.abortMaxUs)
      : undefined;
    const waiter = this.#client.acquire(this.#name, step.key, step.mode, step.nonblock, (w) =>
      this.#resolved(w, i),
    );
    if (abortAfterUs !== undefined) {
      this.#world.clock.schedule(abortAfterUs, () => {
        // A swallowed grant (mutation) looks like waiting to the app, but the machine granted it: leave it.
        if (waiter.state === "waiting" && !waiter.lost && this.#client.alive) this.#client.abort(waiter);
      });
    }
  }

  /** Runs inside the client's effect loop: use the handle at once, schedule everything that calls the machine. */
  #resolved(waiter: Waiter, i: number): void {
    const clock = this.#world.clock;
    if (waiter.state !== "granted") {
      clock.schedule(0, () => this.#finish());
      return;
    }
    this.#held.push(waiter);
    if (waiter.mode !== "write_only") this.#client.appRead(waiter);
    if (waiter.mode !== "read") this.#client.appWrite(waiter);
    if (i + 1 < this.#plan.length) {
      clock.schedule(0, () => this.#acquire(i + 1));
      return;
    }
    const holdUs = this.#prng.int(0, this.#config.holdMaxUs);
    for (const h of this.#held) {
      if (h.mode !== "read" && this.#prng.chance(this.#config.midWriteChance)) {
        clock.schedule(this.#prng.int(0, holdUs), () => {
          if (this.#client.alive && h.state === "granted") this.#client.appWrite(h);
        });
      }
    }
    clock.schedule(holdUs, () => this.#finish());
  }

  #finish(): void {
    if (!this.#client.alive) return; // a dead process releases nothing
    for (let i = this.#held.length - 1; i >= 0; i--) this.#client.release(this.#held[i]!);
    this.#held = [];
    this.next();
  }
}

/** Starts every client's tasks; `running` counts tasks of working clients that still have operations to do. */
export class Workload {
  readonly #tasks: Task[] = [];

  get running(): number {
    let n = 0;
    for (const task of this.#tasks) if (!task.done && task.client.alive && !task.client.fenced) n++;
    return n;
  }

  constructor(world: World, keys: readonly Key[], config: WorkloadConfig, prng: Prng) {
    for (const client of world.clients) {
      const leaver = config.leavers.includes(client.index);
      let tasksLeft = config.tasksPerClient;
      const onDone = (): void => {
        if (leaver && --tasksLeft === 0 && client.acting) {
          world.checkers.coverage.earlyFarewells++;
          world.clock.schedule(0, () => client.leave());
        }
      };
      for (let t = 0; t < config.tasksPerClient; t++) {
        const name = `t${t}`;
        const ops = leaver ? config.leaverOpsPerTask : config.opsPerTask;
        this.#tasks.push(
          new Task(world, client, name, keys, config, prng.fork(`${client.name}.${name}`), ops, onDone),
        );
      }
    }
  }

  start(): void {
    for (const task of this.#tasks) task.next();
  }
}

/**
 * Forced shrink: every client, concurrently, acquires and releases fresh private keys (read) until it
 * caches none of `hot`, at most `cyclesMax` times. Ends when the queue drains.
 */
export function startForcedShrink(world: World, hot: readonly Key[], cyclesMax: number): void {
  for (const client of world.clients) {
    if (client.leaving || !client.acting) continue;
    let cycles = 0;
    const cycle = (): void => {
      if (!client.acting || cycles >= cyclesMax || hot.every((key) => client.locks.view(key) === undefined))
        return;
      cycles++;
      const key = keyFromText(`~shrink.${client.name}.${cycles}`);
      client.acquire("shrink", key, "read", false, (w) => {
        if (w.state !== "granted") return; // the checkers already reported why
        world.clock.schedule(0, () => {
          client.release(w);
          world.clock.schedule(1, cycle);
        });
      });
    };
    world.clock.schedule(0, cycle);
  }
}

/**
 * The closing phases every run shares (lock and cluster simulators): forced shrink — every hot key must leave
 * every client and the server table — then every acting client says farewell, one at a time, running the
 * world until quiet after each step. `enter` tells the caller which phase a violation happened in.
 */
export function shrinkThenFarewell(
  world: World,
  hot: readonly Key[],
  shrinkCyclesMax: number,
  runUntilQuiet: () => void,
  enter: (phase: "shrink" | "farewell") => void,
): void {
  enter("shrink");
  world.trace.add("--- forced shrink ---");
  startForcedShrink(world, hot, shrinkCyclesMax);
  runUntilQuiet();
  world.checkers.atQuiet("shrink");
  world.checkers.afterShrink();

  enter("farewell");
  world.trace.add("--- farewell ---");
  for (const client of world.clients) {
    if (client.leaving || !client.acting) continue;
    client.leave();
    runUntilQuiet();
  }
  world.checkers.afterFarewell();
}
